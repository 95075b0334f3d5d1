"""Stain layers (edge/stain.py): the fast OpenCV paths read a frame exactly as the plain numpy reading does."""
import numpy as np
import pytest

from scopelite.edge import stain
from scopelite.train.corruptions import corrupt
from scopelite.train.synth import make_field


def _background_plain(frame_rgb):
    sub = frame_rgb[::2, ::2]
    grey3 = sub.sum(axis=2, dtype=np.int16)
    bright = sub[grey3 > stain.percentile_of_counts(np.bincount(grey3.ravel(), minlength=766), 60)]
    if bright.size:
        return np.array([stain.percentile_of_counts(np.bincount(bright[:, c], minlength=256), 75) for c in range(3)])
    return frame_rgb.reshape(-1, 3).max(axis=0).astype(np.float64)


def _red_direction_plain(frame_rgb):
    import cv2

    od3 = cv2.GaussianBlur(stain.optical_density(frame_rgb), (0, 0), 1.0)
    od = od3.sum(axis=2)
    t_cell, _ = stain.otsu3(od[::2, ::2])
    cells = od3[::2, ::2][od[::2, ::2] > t_cell]

    def unit(px):
        u = np.median(px, axis=0) if len(px) >= 50 else np.ones(3, np.float32)
        return (u / (np.linalg.norm(u) + 1e-6)).astype(np.float32)

    u = unit(cells)
    off = np.linalg.norm(cells - (cells @ u)[:, None] * u, axis=1)
    return unit(cells[off <= np.median(off)])


def _frames():
    rng = np.random.default_rng(5)
    for i in range(3):
        f = make_field(rng, 640, 480, n_cells=4)[0]
        yield f
        for name in ("brightness_up", "stain", "vignette"):
            yield corrupt(f, name, 3, seed=i)
    yield np.full((48, 64, 3), 200, np.uint8)  # blank: no bright half


@pytest.mark.parametrize("k", range(13))
def test_background_and_red_colour_are_those_of_the_plain_reading(k):
    import cv2

    f = list(_frames())[k]
    assert np.array_equal(stain.frame_background(f), _background_plain(f))
    if f.std() == 0:
        return
    lay = stain.stain_layers(f)
    u = _red_direction_plain(f)  # the layers' residual is the OD's length off this direction
    od3 = cv2.GaussianBlur(lay.od_raw, (0, 0), 1.0)
    off = od3 - (od3 @ u)[..., None] * u
    assert np.allclose(lay.residual, np.sqrt((off * off).sum(axis=2)), atol=1e-5)


@pytest.mark.parametrize("shape", [(480, 640, 3), (363, 360, 3), (481, 641, 3), (2, 2, 3), (1, 5, 3), (6, 8, 4), (6, 8)])
def test_every_other_is_the_strided_copy(shape):
    rng = np.random.default_rng(len(shape) + shape[0])
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), rng.random(shape, dtype=np.float32)):
        half = stain.every_other(image)
        assert half.flags["C_CONTIGUOUS"] and np.array_equal(half, image[::2, ::2])


@pytest.mark.parametrize("k", range(12))
def test_stain_stats_from_counts_are_numpys_medians(k):
    """ood.stain_stats reads its medians from counts of the frame's values (the OD table); the same as numpy's
    median of the OD pixels (what it does for layers without a table), even and odd counts alike."""
    import dataclasses

    from scopelite.edge import ood

    f = list(_frames())[k]
    lay = stain.stain_layers(f)
    assert lay.od_table is not None and np.array_equal(lay.od_raw, lay.od_table[f, np.arange(3)])
    fast, plain = ood.stain_stats(f, lay), ood.stain_stats(f, dataclasses.replace(lay, od_table=None))
    assert fast == plain and fast.rbc_od is not None
    for parity in (0, 1):  # a mask of an even and of an odd number of pixels
        mask = lay.residual[::2, ::2] > np.percentile(lay.residual, 50)
        mask.flat[np.flatnonzero(mask)[:(int(mask.sum()) - parity) % 2]] = False
        assert mask.sum() % 2 == parity
        got = ood._medians_from_counts(f, lay.od_table, mask)[0]
        assert np.array_equal(got, np.median(lay.od_raw[::2, ::2][mask], axis=0))
