"""Corruptions sized in micrometres: deterministic, and the same physical size at any magnification."""
import cv2
import numpy as np
import pytest

from scopelite.edge.scale import estimate_rbc_diameter
from scopelite.train import native_corruptions as N
from scopelite.train.synth import make_field


@pytest.fixture(scope="module")
def field():
    img, _ = make_field(np.random.default_rng(4), 320, 240, n_cells=2)
    return img


def _ppu(img):
    return N.px_per_um(estimate_rbc_diameter(img).diameter_px)


@pytest.mark.parametrize("name", list(N.NATIVE_CORRUPTIONS))
def test_each_is_deterministic_and_grows_with_severity(field, name):
    ppu = _ppu(field)
    diffs = []
    for s in N.SEVERITIES:
        a = N.corrupt_native(field, name, s, ppu, seed=3)
        assert a.shape == field.shape and a.dtype == np.uint8
        assert np.array_equal(a, N.corrupt_native(field, name, s, ppu, seed=3))
        diffs.append(np.abs(a.astype(int) - field.astype(int)).mean())
    assert diffs[0] > 0, "severity 1 must change the field"
    assert diffs[-1] > diffs[0], f"severity 5 must change it more than 1: {diffs}"
    assert not np.array_equal(N.corrupt_native(field, name, 3, ppu, seed=3), N.corrupt_native(field, name, 3, ppu, 4)) \
        or name in ("defocus_blur", "pixelate")  # those two draw nothing at random


@pytest.mark.parametrize("name", ["debris", "stain_deposit", "bubbles"])
def test_an_artefact_at_twice_the_magnification_covers_four_times_the_pixels(field, name):
    """The scale comes from the red-cell ruler on each field; the same µm give 2x the px on a side."""
    big = cv2.resize(field, (field.shape[1] * 2, field.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    p1, p2 = _ppu(field), _ppu(big)
    assert p2 / p1 == pytest.approx(2.0, rel=0.1)  # the ruler sees the magnification
    changed = []  # pixels covered, weighted by coverage (an edge pixel half covered counts half)
    for img, ppu in ((field, p1), (big, p2)):
        out = N.corrupt_native(img, name, 4, ppu, seed=7)
        changed.append(int(np.abs(out.astype(int) - img.astype(int)).sum()))
    assert changed[0] > 30 * 3 * 50
    assert changed[1] / changed[0] == pytest.approx(4.0, rel=0.1), changed


def test_a_speck_has_its_size_in_micrometres_whatever_the_pixels():
    """Same µm extent at 4 and 8 px/µm: the same specks, each 4x the pixels; areas in µm² alike."""
    areas_um2, counts = [], []
    for side, ppu in ((200, 4.0), (400, 8.0)):
        white = np.full((side, side, 3), 235, np.uint8)
        out = N.corrupt_native(white, "debris", 2, ppu, seed=11)
        dark = ((out.astype(int).sum(-1) < 3 * 150)).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
        counts.append(n - 1)
        areas_um2.append(np.median(stats[1:, cv2.CC_STAT_AREA]) / ppu**2)
    assert counts[0] == counts[1] and counts[0] >= 10
    assert areas_um2[1] == pytest.approx(areas_um2[0], rel=0.2)
    lo, hi = N.SPECK_RADIUS_UM
    assert np.pi * (0.5 * lo) ** 2 < areas_um2[0] < np.pi * (hi + 0.3) ** 2


def test_pixelate_is_physical_and_blur_radius_follows_the_scale(field):
    assert np.array_equal(N.corrupt_native(field, "pixelate", 5, ppu=0.5), field)  # 2 µm pixels: coarser than 1.65
    a = N.corrupt_native(field, "defocus_blur", 3, ppu=2.0)
    b = N.corrupt_native(field, "defocus_blur", 3, ppu=4.0)
    sharp = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()  # noqa: E731
    assert sharp(b) < sharp(a) < sharp(field)  # the same 0.85 µm blur is more pixels at a higher magnification


def test_bad_arguments_are_refused(field):
    with pytest.raises(ValueError, match="unknown corruption"):
        N.corrupt_native(field, "snow", 1, 3.0)
    with pytest.raises(ValueError, match="severity"):
        N.corrupt_native(field, "debris", 6, 3.0)
    with pytest.raises(ValueError, match="px per µm"):
        N.corrupt_native(field, "debris", 1, 0.0)
    with pytest.raises(ValueError, match="red-cell"):
        N.px_per_um(0)


def test_slide_debris_draws_each_kind_and_caps_severity_by_strength():
    crop = np.full((96, 96, 3), 230, np.uint8)
    outs = [N.slide_debris(crop, 1.0, 2.4, seed) for seed in range(40)]
    assert np.array_equal(outs[0], N.slide_debris(crop, 1.0, 2.4, 0))
    assert sum(not np.array_equal(o, crop) for o in outs) >= 36  # nearly always draws something on a crop
    mild = [np.abs(N.slide_debris(crop, 0.1, 2.4, s).astype(int) - 230).mean() for s in range(40)]
    harsh = [np.abs(o.astype(int) - 230).mean() for o in outs]
    assert np.mean(harsh) > 1.5 * np.mean(mild)


def test_debris_augmentation_is_sized_from_the_training_images_red_cells():
    """--aug debris: at a red-cell diameter of 36 px instead of 18, each artefact is 4x the pixels."""
    from scopelite.train._keras import tf
    from scopelite.train.augment import make_augment

    crop = np.full((96, 96, 3), 230.0, np.float32)
    stats = {}
    for rbc in (18.0, 36.0):
        tf.random.set_seed(0)
        fn = make_augment("none", ops={"debris": 1.0}, p=1.0, rbc_px=rbc)
        sizes = []
        for _ in range(60):
            y = fn(tf.constant(crop)).numpy()
            assert y.shape == crop.shape and y.min() >= 0 and y.max() <= 255
            mask = (np.abs(y - crop).max(-1) > 25).astype(np.uint8)
            n, _, st, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            sizes += list(st[1:, cv2.CC_STAT_AREA])
        stats[rbc] = (len(sizes), float(np.median(sizes)))
    assert stats[18.0][0] > 40 and stats[36.0][0] < stats[18.0][0] / 2  # fewer per crop (a crop holds fewer µm²),
    assert stats[36.0][1] / stats[18.0][1] == pytest.approx(4.0, rel=0.4), stats  # twice the px per µm
