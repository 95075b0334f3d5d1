"""Pixel noise (edge/noise.py): read from neighbouring pixels; a noisy frame is read through a smoothed copy."""
import numpy as np

from scopelite.edge import noise
from scopelite.edge.noise import NOISY, noise_level, quieter
from scopelite.train.corruptions import corrupt
from scopelite.train.synth import make_field


def _field(seed):
    return make_field(np.random.default_rng(seed), 640, 480)[0]


def test_clean_frames_are_read_as_they_are_and_noisy_ones_are_smoothed():
    f = _field(0)
    assert noise_level(f) < NOISY
    out, level = quieter(f)
    assert out is f and level == 0.0
    for name, severity in (("shot_noise", 5), ("gaussian_noise", 3)):
        v = corrupt(f, name, severity, seed=1)
        out, level = quieter(v)
        assert level > NOISY and out.shape == v.shape and out.dtype == np.uint8
        assert noise_level(out) < level / 3  # much quieter
        assert abs(float(out.mean()) - float(v.mean())) < 2  # smoothed, not brightened or darkened


def test_field_mode_reads_a_very_noisy_frame_like_the_clean_one():
    """Cells and scale of a frame at 9 photons a pixel, read through the smoothed copy: the white cells of the
    clean frame and a ruler nearer the clean one's than without smoothing (the test can fail); the record
    says how noisy the frame was; the crops classified are the frame's own."""
    from scopelite.edge import field as field_lib
    from scopelite.edge.bundle import CLASS_NAMES, InputSpec
    from scopelite.edge.classifier import FakeClassifier
    from scopelite.edge.watch import classify_field

    clf = FakeClassifier(list(CLASS_NAMES), InputSpec(96, 96, rbc_px=18.0))
    cfg = field_lib.FieldConfig(model_rbc_px=18.0, input_px=96)
    off_by, on_by = [], []
    for seed in range(3):
        f = _field(seed)
        clean, clean_scale = classify_field(f, clf, cfg, 0.5)
        v = corrupt(f, "shot_noise", 5, seed=7)
        on, on_scale = classify_field(v, clf, cfg, 0.5)
        assert on_scale["noise"] > NOISY and "noise" not in clean_scale
        whites = [c for c in clean if c["kind"] == "white"]
        assert sum(c["kind"] == "white" for c in on) == len(whites)
        saved = noise.NOISY
        try:
            noise.NOISY = 1e9  # never smoothed
            off, off_scale = classify_field(v, clf, cfg, 0.5)
        finally:
            noise.NOISY = saved
        on_by.append(abs(on_scale["rbc_px"] - clean_scale["rbc_px"]))
        off_by.append(abs(off_scale["rbc_px"] - clean_scale["rbc_px"]))
    assert sum(on_by) < sum(off_by), (on_by, off_by)


def test_the_noise_gate_reads_the_whole_frame_and_the_smoothing_fits_a_shrunk_copy():
    """A frame over field mode's search size is read through a copy shrunk by a whole factor, whose noise is
    lower (averaged): whether to smooth is decided from the frame itself, and sigma is scaled to the copy."""
    import cv2

    f = corrupt(_field(2), "shot_noise", 5, seed=3)
    small = cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)
    level = noise_level(f)
    assert level > NOISY and noise_level(small) < level  # averaged away by the shrink
    out, said = quieter(small, level, factor=2)
    assert said == round(level, 1) and out is not small
    same, _ = quieter(f, level, factor=1)
    assert noise_level(out) < noise_level(small) and noise_level(same) < level


def test_a_frame_too_narrow_to_compare_neighbours_has_no_noise_read():
    """A frame one pixel wide (or none) has no neighbouring pixels: 0, not NaN (calibrate wrote "noise": NaN)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert noise_level(np.zeros((30, 1, 3), np.uint8)) == 0.0 and noise_level(np.zeros((0, 5, 3), np.uint8)) == 0.0
