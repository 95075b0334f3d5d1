"""Post-training int8 calibration: the input is pinned to [0, 255] without widening any other range."""
import numpy as np

from scopelite.compress.convert import range_anchor


def test_range_anchor_is_the_image_with_one_black_and_one_white_pixel():
    img = np.full((32, 32, 3), 120, np.uint8)
    a = range_anchor(img)
    assert a.min() == 0 and a.max() == 255 and a.dtype == np.uint8
    assert int((a != img).any(axis=-1).sum()) == 2  # everything else is the real image
    assert (img == 120).all()  # a copy: the representative image itself is untouched


def test_int8_input_takes_raw_pixels(tiny_run):
    """Scale 1, zero point 0: the camera's uint8 pixels are the model's input, unchanged."""
    from scopelite.edge import runtime

    interp = runtime.make_interpreter(tiny_run["tflite"], plain=True)
    (inp,) = interp.get_input_details()
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)
