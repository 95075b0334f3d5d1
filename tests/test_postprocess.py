import numpy as np
import pytest

from scopelite.edge.bundle import InputSpec
from scopelite.edge.classifier import quantize_input
from scopelite.edge.postprocess import Tally, dequantize, top_k
from scopelite.edge.preprocess import center_square, prepare


def test_dequantize_int8_does_not_wrap():
    q = np.array([-128, 0, 127], np.int8)
    np.testing.assert_allclose(dequantize(q, 0.5, -128), [0.0, 64.0, 127.5])
    u = np.array([0, 255], np.uint8)
    np.testing.assert_allclose(dequantize(u, 1 / 256, 0), [0.0, 255 / 256])


def test_quantize_input_round_trips_pixels():
    px = np.array([0, 17, 255], np.uint8)
    assert quantize_input(px, "uint8", 1.0, 0).tolist() == [0, 17, 255]
    q = quantize_input(px, "int8", 1.0, -128)
    assert q.dtype == np.int8 and q.tolist() == [-128, -111, 127]
    np.testing.assert_allclose(dequantize(q, 1.0, -128), px)


def test_top_k_order_threshold_and_ties():
    labels = ["a", "b", "c", "d"]
    res = top_k(np.array([0.1, 0.5, 0.1, 0.3]), labels, k=3)
    assert [c.label for c in res] == ["b", "d", "a"]
    assert [c.label for c in top_k(np.array([0.1, 0.5, 0.1, 0.3]), labels, k=4, threshold=0.2)] == ["b", "d"]
    with pytest.raises(ValueError):
        top_k(np.zeros(3), labels)


def test_tally():
    t = Tally(["a", "b"])
    for x in "aab":
        t.add(x)
    s = t.summary()
    assert s["total"] == 3 and s["counts"] == {"a": 2, "b": 1}
    assert s["percent"]["a"] == pytest.approx(66.67)


def test_prepare_center_crops_and_resizes():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 200  # the centre square
    sq = center_square(img)
    assert sq.shape == (40, 40, 3) and sq.min() == 200
    out = prepare(img, InputSpec(height=20, width=20))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8 and out.min() == 200
    with pytest.raises(ValueError):
        prepare(img.astype(np.float32), InputSpec(height=20, width=20))
