"""The red-cell ruler: scale from the slide itself, smoothed over frames, carried in the sidecar."""
import json

import numpy as np
import pytest

from scopelite.edge import scale
from scopelite.edge.bundle import BundleError, Sidecar
from scopelite.train.synth import make_crops, make_field

# generated red cells have radius 10.5-13.5 px at scale 1 (train/synth.py): diameter ~24 px
TRUE_DIAMETER = 24.0


@pytest.mark.parametrize("s", [0.6, 1.0, 1.5, 2.2])
def test_estimate_follows_the_magnification(s):
    rng = np.random.default_rng(int(s * 10))
    est = [scale.estimate_rbc_diameter(make_field(rng, 640, 480, n_cells=4, scale=s)[0]) for _ in range(3)]
    d = np.median([e.diameter_px for e in est])
    assert abs(d / (TRUE_DIAMETER * s) - 1) < 0.12, (s, d)
    assert all(e.cells >= 3 for e in est)


def test_estimate_ignores_colour_and_brightness():
    img, _ = make_field(np.random.default_rng(3), 640, 480, n_cells=4)
    ref = scale.estimate_rbc_diameter(img).diameter_px
    for other in (img[..., [2, 0, 1]], (img * 0.55).astype(np.uint8), np.clip(img.astype(int) + [-30, 10, 25], 0, 255).astype(np.uint8)):
        assert abs(scale.estimate_rbc_diameter(other).diameter_px / ref - 1) < 0.08


def test_too_few_red_cells_gives_none_and_the_smoother_keeps_its_value():
    blank = np.full((240, 320, 3), 230, np.uint8)
    e = scale.estimate_rbc_diameter(blank)
    assert e.diameter_px is None
    sm = scale.ScaleSmoother(window=5)
    assert sm.update(e) is None
    for v in (50.0, 52.0, 200.0, 51.0):  # one wild frame does not move the median far
        sm.update(scale.ScaleEstimate(v, 10))
    assert sm.update(e) == 51.5 and sm.current == 51.5


def test_crop_side_puts_red_cells_at_the_training_scale():
    assert scale.crop_side(67.5, 18.0, 96) == 360
    assert scale.crop_side(36.0, 18.0, 96) == 192


def test_images_rbc_px_on_generated_crops():
    images, _ = make_crops(20, size=96, seed=0)
    d = scale.images_rbc_px(images, sample=160)
    assert d is not None and abs(d / TRUE_DIAMETER - 1) < 0.2
    assert scale.images_rbc_px(np.zeros((0, 96, 96, 3), np.uint8)) is None


def test_images_rbc_px_does_not_depend_on_the_crops_resolution():
    """The same scenes rendered at 96 and 384 px give the same scale per 96 px (measured at >= 384 px); measured
    at 96 px as they are, the whole-pixel distance transform reads them 4 % off on these crops (2.3 % on PBC's)."""
    small, _ = make_crops(40, size=96, seed=0)
    large, _ = make_crops(40, size=384, seed=0)
    at_96, at_384 = scale.images_rbc_px(small, sample=320), scale.images_rbc_px(large, sample=320)
    assert abs(at_96 / (at_384 / 4) - 1) < 0.015, (at_96, at_384)


def test_sidecar_carries_the_training_scale(tmp_path):
    from scopelite.edge.packaged import default_model
    from scopelite.edge.bundle import load_sidecar

    sc = load_sidecar(default_model())
    assert 15.0 < sc.input.rbc_px < 20.0  # PBC's 96 px crops: median 17.6 px over all 12,453 (images_rbc_px)
    d = sc.to_json()
    assert Sidecar.from_json(json.loads(json.dumps(d))).input.rbc_px == sc.input.rbc_px
    for bad in (0, -3, "big", True):
        d["input"]["rbc_px"] = bad
        with pytest.raises(BundleError, match="rbc_px"):
            Sidecar.from_json(d)
    d["input"]["rbc_px"] = None  # not measured: written as null (schema 2; schema-1 files without it: test_sidecar_contract)
    assert Sidecar.from_json(d).input.rbc_px is None
    del d["input"]["rbc_px"]
    with pytest.raises(BundleError, match="rbc_px"):
        Sidecar.from_json(d)


def test_slide_smoother_holds_one_scale_per_slide_and_follows_a_turned_objective():
    """Tracking over one slide: local swings of the red cells' size do not move the crop; an objective turn does."""
    est = lambda v: scale.ScaleEstimate(v, 10)  # noqa: E731
    short, slide = scale.ScaleSmoother(window=15), scale.ScaleSmoother(window=15, slide=1000)
    for v in [68.0] * 100 + [76.0] * 20:  # a patch of larger-looking red cells (another part of the smear)
        short.update(est(v))
        slide.update(est(v))
    assert short.current == 76.0  # the 15-estimate median followed the patch
    assert slide.current == 68.0  # the slide's scale did not (+12 % is no objective change)
    for v in [68.0 * 2.5] * 15:  # 40x -> 100x objective: +150 %
        slide.update(est(v))
    assert slide.current == 170.0 and len(slide.slide) < 30  # the history restarted at the turn (not 135 values)
    slide.update(scale.ScaleEstimate(None, 0))
    assert slide.current == 170.0


def test_a_frame_without_background_gives_no_estimate_and_no_overflow():
    """A view whose every pixel reads as cell (a 3000x20 strip of one colour after the light correction): no
    estimate; the distance transform of a mask with no zero pixel is meaningless (its peaks overflowed sums)."""
    import warnings

    from scopelite.edge.stain import Layers

    h, w = 20, 3000
    full = Layers(od=np.ones((h, w), np.float32), residual=np.zeros((h, w), np.float32), t_cell=0.5, t_stained=1.0,
                  od_raw=np.ones((h, w, 3), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scale.estimate_rbc_diameter(np.zeros((h, w, 3), np.uint8), full).diameter_px is None
