"""Augmentation ops: each one switchable with its own strength, each keeping shape and range."""
import numpy as np
import pytest

from conftest import run_cli
from scopelite.train.config import AUG_OPS, FitConfig


@pytest.fixture(scope="module")
def crop():
    from scopelite.train.synth import make_crops

    x, _ = make_crops(1, size=48, seed=3)
    return x[0].astype(np.float32)


def test_strong_preset_and_per_op_overrides():
    from scopelite.train.augment import OPS, STRONG, resolve_ops

    assert tuple(OPS) == AUG_OPS
    assert resolve_ops("strong", 0.7) == {k: 0.7 for k in STRONG}
    got = resolve_ops("strong", 0.7, {"hed": 0.5, "jpeg": 0.0, "rotate": 0.2})
    assert list(got) == ["rotate", "zoom", "colour", "stain", "hed", "blur", "noise", "blots"]  # applied in OPS order
    assert got["hed"] == 0.5 and got["zoom"] == 0.7 and "jpeg" not in got
    assert resolve_ops("flips", 0.7, {"randaugment": 0.4}) == {"randaugment": 0.4}
    assert resolve_ops("none", 0.7) == {}
    assert resolve_ops("flips", 0.6, {"hed": None}) == {"hed": 0.6}  # no value: the policy's strength
    with pytest.raises(ValueError, match="unknown augmentation 'warp'"):
        resolve_ops("strong", 0.7, {"warp": 0.5})
    with pytest.raises(ValueError, match="from 0 to 1"):
        resolve_ops("strong", 0.7, {"hed": 1.5})


@pytest.mark.parametrize("name", AUG_OPS)
def test_each_op_alone_changes_the_image_and_keeps_shape_and_range(crop, name):
    from scopelite.train._keras import tf
    from scopelite.train.augment import make_augment

    tf.random.set_seed(0)
    fn = make_augment("none", ops={name: 0.9}, p=1.0)  # "none": no flips, only this op, always applied
    outs = [fn(tf.constant(crop)).numpy() for _ in range(6)]
    for y in outs:
        assert y.shape == crop.shape and y.dtype == np.float32
        assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 255
    assert max(np.abs(y - crop).mean() for y in outs) > 0.5, f"{name} never changed the image"
    off = make_augment("none", ops={name: 0.0}, p=1.0)
    assert np.array_equal(off(tf.constant(crop)).numpy(), crop)  # strength 0 switches it off


def test_bgswap_gives_a_crop_another_crops_background():
    from scopelite.train._keras import tf
    from scopelite.train.augment import _bgswap, crop_backgrounds

    rng = np.random.default_rng(0)
    x = np.full((32, 32, 3), (200.0, 225.0, 230.0), np.float32)  # a cyan background ...
    x[8:24, 8:24] = (120.0, 60.0, 150.0)  # ... and a purple cell: a quarter of the pixels
    x += rng.normal(0, 2, x.shape).astype(np.float32)
    own = crop_backgrounds(x[None])[0]
    assert np.allclose(own, (200, 225, 230), atol=2)  # the brightest 40 %: background only
    target = np.array([[232.0, 214.0, 222.0]], np.float32)  # a pink one
    y = _bgswap(tf.constant(x), 1.0, target).numpy()
    assert np.allclose(crop_backgrounds(y[None])[0], target[0], atol=1.0)
    gain = target[0] / own
    assert np.allclose(y[16, 16], x[16, 16] * gain, rtol=1e-4)  # the cell under the same white balance
    half = _bgswap(tf.constant(x), 0.5, target).numpy()
    assert np.allclose(half[0, 0], x[0, 0] * np.sqrt(gain), rtol=1e-4)  # s = 0.5: half the way (in log)
    assert np.allclose(_bgswap(tf.constant(x), 0.0, target).numpy(), x)
    # draws among the bank: two backgrounds, both reached
    bank = np.array([[232.0, 214.0, 222.0], [225.0, 228.0, 200.0]], np.float32)
    seen = {tuple(np.round(crop_backgrounds(_bgswap(tf.constant(x), 1.0, bank).numpy()[None])[0] / 10)) for _ in range(20)}
    assert len(seen) == 2


def test_bgswap_gain_is_bounded_and_crop_backgrounds_reads_batches_alike():
    from scopelite.train._keras import tf
    from scopelite.train.augment import _bgswap, crop_backgrounds

    dark = np.full((16, 16, 3), 60.0, np.float32)  # a crop whose brightest pixels are a dark cell
    y = _bgswap(tf.constant(dark), 1.0, np.array([[235.0, 235.0, 235.0]], np.float32)).numpy()
    assert np.allclose(y, 120.0)  # gain 235 / 60 = 3.9, kept at 2
    rng = np.random.default_rng(1)
    many = rng.integers(0, 256, (600, 8, 8, 3), dtype=np.uint8)  # more than one chunk of 512
    one_by_one = np.stack([crop_backgrounds(m[None])[0] for m in many])
    assert np.allclose(crop_backgrounds(many), one_by_one)


def test_make_dataset_swaps_backgrounds_from_the_bank_it_is_given():
    from scopelite.train.augment import crop_backgrounds, make_dataset

    x = np.full((64, 32, 32, 3), (200.0, 225.0, 230.0), np.float32)
    x[:, 8:24, 8:24] = (120.0, 60.0, 150.0)
    bank = np.array([[232.0, 214.0, 222.0]], np.float32)
    ds = make_dataset(x.astype(np.uint8), np.zeros(64, int), 2, 16, True, policy="none", ops={"bgswap": 1.0},
                      backgrounds=bank)
    got = np.concatenate([b.numpy() for b, _ in ds])
    moved = np.abs(crop_backgrounds(got) - bank[0]).max(axis=1) < 1.5
    assert 8 < moved.sum() < 56  # about half the crops (recipe.P), given the bank's background
    assert all(np.allclose(crop_backgrounds(got[i:i + 1])[0], (200, 225, 230), atol=1.5) for i in np.flatnonzero(~moved))


def test_fit_draws_bgswap_backgrounds_from_its_training_crops(tmp_path):
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "run"), "--arch", "tiny", "--image-size", "32",
                "--epochs", "1", "--synthetic-per-class", "6", "--aug", "bgswap=1.0")
    assert r.returncode == 0, r.stderr
    assert "bgswap: backgrounds drawn from the" in r.stdout + r.stderr
    # 48 generated cells leave a test split of a few images: one image's weight is said, and what comes next
    assert "one image is" in r.stdout + r.stderr and "points: check the model on cells kept apart" in r.stdout + r.stderr
    assert f"next: cellcompress {tmp_path / 'run'} --int8 --qat --out {tmp_path / 'run'}/int8" in r.stdout


def test_hed_jitter_moves_one_stain_and_is_the_identity_at_rest(crop):
    from scopelite.train._keras import tf
    from scopelite.train.augment import HED_FROM_RGB, hed_jitter

    x = tf.constant(crop)
    same = hed_jitter(x, tf.ones(3), tf.zeros(3)).numpy()
    assert np.abs(same - crop).max() < 0.05

    def densities(img):
        return (-np.log((img + 1.0) / 256.0)) @ HED_FROM_RGB

    more_h = hed_jitter(x, tf.constant([1.5, 1.0, 1.0]), tf.zeros(3)).numpy()
    ok = (more_h > 1) & (more_h < 254)  # pixels that were not clipped
    ok = ok.all(-1) & (crop > 1).all(-1) & (crop < 254).all(-1)
    d0, d1 = densities(crop)[ok], densities(more_h)[ok]
    assert ok.sum() > 100
    np.testing.assert_allclose(d1[:, 1:], d0[:, 1:], atol=2e-3)  # eosin and DAB untouched
    np.testing.assert_allclose(d1[:, 0], 1.5 * d0[:, 0], atol=2e-3)  # haematoxylin x1.5


def test_shot_noise_is_unbiased_signal_dependent_and_grows_with_strength():
    from scopelite.train._keras import tf
    from scopelite.train.augment import _shot

    tf.random.set_seed(1)
    flat = np.concatenate([np.full((64, 32, 3), 200.0), np.full((64, 32, 3), 20.0)], 1).astype(np.float32)
    outs = np.stack([_shot(tf.constant(flat), 1.0).numpy() for _ in range(40)])
    bright, dark = outs[:, :, :32], outs[:, :, 32:]
    assert abs(bright.mean() - 200) < 3 and abs(dark.mean() - 20) < 1.5  # Poisson counts: no bias
    assert bright.std() > 2 * dark.std()  # photon noise grows with the signal (Gaussian noise would not)
    weak = np.stack([_shot(tf.constant(flat), 0.1).numpy() for _ in range(40)])
    assert weak[:, :, :32].std() < 0.6 * bright.std()  # more photons at low strength: less noise


def test_rotate_by_0_and_90_degrees(crop):
    from scopelite.train._keras import tf
    from scopelite.train.augment import rotate

    x = tf.constant(crop)
    assert np.abs(rotate(x, 0.0).numpy() - crop).max() < 1e-3
    r90 = rotate(x, 90.0).numpy()
    assert min(np.abs(r90 - tf.image.rot90(x, k).numpy()).max() for k in (1, 3)) < 1e-2


def test_every_randaugment_op(crop):
    from scopelite.train._keras import tf
    from scopelite.train.augment import RANDAUGMENT_OPS, randaugment_op

    x = tf.constant(crop)
    for i, name in enumerate(RANDAUGMENT_OPS):
        y = randaugment_op(x, i, 0.5).numpy()
        assert y.shape == crop.shape and np.isfinite(y).all() and y.min() >= 0 and y.max() <= 255, name
        changed = np.abs(y - crop).mean() > 0.5
        if name == "identity":
            assert not changed
        elif name != "autocontrast":  # a crop that already spans 0..255 stays as it is
            assert changed, name


def test_progressive_stages_scale_the_aug_strengths():
    from scopelite.train.fit import plan, segment_ops

    cfg = FitConfig(out="x", epochs=9, progressive=True, augment="strong", strength=0.5,
                    aug={"hed": 0.8, "rotate": None, "jpeg": 0.0})
    first, last = (segment_ops(cfg, s) for s in (plan(cfg)[0], plan(cfg)[-1]))
    assert last == {"hed": 0.8, "rotate": 0.5, "jpeg": 0.0}
    assert first["hed"] == pytest.approx(0.8 * 0.4) and first["rotate"] == pytest.approx(0.5 * 0.4)
    assert segment_ops(FitConfig(out="x"), plan(FitConfig(out="x"))[0]) is None


def test_fit_cli_takes_aug_ops_and_refuses_bad_ones(tmp_path):
    import json

    run = tmp_path / "a"
    r = run_cli("celltrain", "fit", "--out", str(run), "--arch", "tiny", "--image-size", "32", "--epochs", "1",
                "--synthetic-per-class", "12", "--aug", "hed=0.6", "--aug", "randaugment", "--aug", "rotate=0.5",
                "--quiet")
    assert r.returncode == 0, r.stderr[-1500:]
    assert "augmentation flips, hed=0.6, randaugment=strength, rotate=0.5" in r.stdout
    assert json.loads((run / "config.json").read_text())["aug"] == {"hed": 0.6, "randaugment": None, "rotate": 0.5}
    for bad, msg in (("warp=0.5", "unknown augmentation 'warp'"), ("hed=2", "from 0 to 1"), ("hed=lots", "a number")):
        r = run_cli("celltrain", "fit", "--out", str(tmp_path / "b"), "--aug", bad)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_yaml_config_takes_aug_as_a_mapping(tmp_path):
    import json

    cfg = tmp_path / "fit.yaml"
    cfg.write_text("arch: tiny\nimage-size: 32\nepochs: 1\nsynthetic-per-class: 12\naug: {hed: 0.4, jpeg: 0}\n")
    r = run_cli("celltrain", "fit", "--config", str(cfg), "--out", str(tmp_path / "y"), "--quiet")
    assert r.returncode == 0, r.stderr[-1500:]
    assert json.loads((tmp_path / "y" / "config.json").read_text())["aug"] == {"hed": 0.4, "jpeg": 0.0}


def test_domain_op_moves_stain_densities_far_and_keeps_the_background_near_white():
    import tensorflow as tf

    from scopelite.train.augment import _domain

    tf.random.set_seed(0)
    x = np.full((16, 16, 3), 240.0, np.float32)  # background
    x[4:12, 4:12] = [200.0, 120.0, 130.0]  # a pink red cell
    od = lambda a: -np.log((np.asarray(a)[6:10, 6:10].mean((0, 1)) + 1.0) / 256.0)  # noqa: E731
    ratios = np.array([od(_domain(tf.constant(x), 1.0)) / od(x) for _ in range(40)])
    assert ratios.max() > 1.6 and ratios.min() < 0.65  # beyond the +-30 % of the 'stain' op
    backgrounds = np.array([_domain(tf.constant(x), 1.0).numpy()[0, 0] for _ in range(20)])
    # the background stays light: it carries little density, so it moves mostly by the white balance
    assert backgrounds.min() > 170 and backgrounds.mean() > 215
    rest = _domain(tf.constant(x), 0.0).numpy()
    assert np.allclose(rest, x, atol=1.0)  # strength 0: the identity


def test_hue_op_turns_the_hue_anywhere_and_keeps_brightness_and_saturation():
    import colorsys

    import tensorflow as tf

    from scopelite.train.augment import _hue

    tf.random.set_seed(0)
    x = np.full((8, 8, 3), [235.0, 200.0, 190.0], np.float32)  # PBC's beige-pink background
    h0, s0, v0 = colorsys.rgb_to_hsv(*(x[0, 0] / 255.0))
    turned = [colorsys.rgb_to_hsv(*(_hue(tf.constant(x), 1.0).numpy()[0, 0] / 255.0)) for _ in range(60)]
    shift = np.array([min(abs(h - h0), 1 - abs(h - h0)) for h, _, _ in turned])
    assert shift.max() > 0.35 and np.median(shift) > 0.15  # far beyond colour's +-0.06 turn
    assert np.allclose([v for _, _, v in turned], v0, atol=0.01) and np.allclose([s for _, s, _ in turned], s0, atol=0.02)
    assert np.allclose(_hue(tf.constant(x), 0.0).numpy(), x, atol=1.0)  # strength 0: the identity


def test_grey_op_removes_colour_and_keeps_luminance():
    import tensorflow as tf

    from scopelite.train.augment import _grey

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    g = _grey(tf.constant(x), 1.0).numpy()
    assert np.allclose(g, luma[..., None], atol=0.01)  # s = 1: grey, the luminance kept
    assert np.allclose(g.std(axis=-1), 0.0, atol=0.01) and x.std(axis=-1).mean() > 20
    half = _grey(tf.constant(x), 0.5).numpy()
    assert np.allclose(half, (x + luma[..., None]) / 2, atol=0.01)
    assert np.allclose(_grey(tf.constant(x), 0.0).numpy(), x)  # strength 0: the identity
