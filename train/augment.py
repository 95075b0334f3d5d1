"""Augmentation inside tf.data, on raw 0..255 float pixels.

``policy`` is "none", "flips" (flips + 90° rotations: a cell has no up) or
"strong": flips plus what the field does to images — zoom/shift, exposure,
contrast, saturation, hue, stain shifts in optical-density space, defocus,
sensor noise, JPEG artefacts and dark blots (stain precipitate, ink) — each
applied with probability ``p`` at ``strength`` (0..1).

Every transform is also a named op (``OPS``) with a strength of its own:
``ops={"hed": 0.5, "jpeg": 0}`` adds HED stain jitter to the policy's ops and
switches JPEG off (``celltrain fit --aug hed=0.5 --aug jpeg=0``). Beyond the
"strong" set there are ``rotate`` (small rotations), ``hed`` (stain jitter in
haematoxylin-eosin-DAB space, Tellez et al. 2018), ``randaugment`` (two ops
drawn per image from a RandAugment list, Cubuk et al. 2020, magnitude from the
strength) and ``shot`` (photon noise of a dim camera: Poisson, signal-dependent,
unlike ``noise``'s fixed Gaussian), ``hue`` (any hue: another stain's colours), ``grey`` (luminance only), and ``debris`` (specks, fibres, stain deposits
and bubbles sized in micrometres from the training images' red cells, not in
pixels: ``scopelite.train.native_corruptions``).
"""
from __future__ import annotations

import numpy as np

from . import recipe as R
from ._keras import tf
from .config import AUG_OPS
from .recipe import HED_FROM_RGB, POLICIES, RGB_FROM_HED, STRONG, resolve_ops  # noqa: F401 - re-exported


def _flips(x):
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    return tf.image.rot90(x, k=tf.random.uniform([], 0, 4, tf.int32))


def _maybe(p, fn, x):
    return tf.cond(tf.random.uniform([]) < p, lambda: fn(x), lambda: x)


def _zoom_shift(x, s):
    """Zoom by up to ±15 %·s and shift by up to 6 px·s (at 96 px); reflected borders, never black ones."""
    size = tf.shape(x)[0]
    pad = size // 3
    y = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    scale = tf.random.uniform([], 1.0 - R.ZOOM * s, 1.0 + R.ZOOM * s)
    new = tf.cast(tf.cast(size + 2 * pad, tf.float32) * scale, tf.int32)
    y = tf.image.resize(y, [new, new])
    max_shift = tf.cast(R.SHIFT_PX * s * tf.cast(size, tf.float32) / R.SHIFT_AT, tf.int32) + 1
    off = (new - size) // 2 + tf.random.uniform([2], -max_shift, max_shift, tf.int32)
    off = tf.clip_by_value(off, 0, new - size)
    return tf.image.crop_to_bounding_box(y, off[0], off[1], size, size)


def _bgswap(x, s, backgrounds=None):
    """Another set-up's background: the crop white-balanced so that its background (the mean of its brightest
    ``recipe.BG_BRIGHTEST`` of pixels) takes the colour of one of ``backgrounds`` (RGB rows, drawn at random:
    ``crop_backgrounds`` of the training crops; None: ``recipe.BACKGROUNDS``), s = 1 the whole way; each
    channel's gain kept within ``recipe.BG_MAX_GAIN`` (a crop whose brightest pixels are its cell). A lab that
    photographed one class on one set-up can otherwise teach a model the background instead of the cell."""
    bank = tf.constant(R.BACKGROUNDS if backgrounds is None else backgrounds, tf.float32)
    grey = tf.reshape(tf.reduce_sum(x * tf.constant(R.LUMA), axis=-1), [-1])
    n = tf.size(grey)
    k = tf.maximum(tf.cast(tf.cast(n, tf.float32) * R.BG_BRIGHTEST, tf.int32), 1)
    bright = tf.math.top_k(grey, k).indices
    own = tf.reduce_mean(tf.gather(tf.reshape(x, [-1, 3]), bright), axis=0)
    target = bank[tf.random.uniform([], 0, tf.shape(bank)[0], tf.int32)]
    gain = tf.clip_by_value(tf.maximum(target, 1.0) / tf.maximum(own, 1.0), 1.0 / R.BG_MAX_GAIN, R.BG_MAX_GAIN)
    return tf.clip_by_value(x * tf.pow(gain, s), 0.0, 255.0)


def crop_backgrounds(images: np.ndarray) -> np.ndarray:
    """Each crop's background as ``_bgswap`` measures it (RGB float32 rows): the mean of its brightest
    ``recipe.BG_BRIGHTEST`` of pixels by luminance."""
    out = np.empty((len(images), 3), np.float32)
    for i in range(0, len(images), 512):  # a few hundred crops at a time: memory stays small
        x = np.asarray(images[i:i + 512], np.float32).reshape(min(512, len(images) - i), -1, 3)
        grey = x @ np.asarray(R.LUMA, np.float32)
        k = max(int(x.shape[1] * R.BG_BRIGHTEST), 1)
        idx = np.argpartition(-grey, k - 1, axis=1)[:, :k]
        out[i:i + len(x)] = np.take_along_axis(x, idx[..., None], axis=1).mean(axis=1)
    return out


def _colour(x, s):
    x = x / 255.0
    x = tf.image.adjust_brightness(x, tf.random.uniform([], -R.BRIGHTNESS * s, R.BRIGHTNESS * s))
    x = tf.image.adjust_contrast(x, tf.random.uniform([], 1 - R.CONTRAST * s, 1 + R.CONTRAST * s))
    x = tf.image.adjust_saturation(x, tf.random.uniform([], 1 - R.SATURATION * s, 1 + R.SATURATION * s))
    x = tf.image.adjust_hue(x, tf.random.uniform([], -R.HUE * s, R.HUE * s))
    gamma = tf.exp(tf.random.uniform([], -R.GAMMA * s, R.GAMMA * s))
    x = tf.clip_by_value(x, 0.0, 1.0) ** gamma
    return x * 255.0


def _hue(x, s):
    """Another stain's hue: the hue rotated by up to +-0.5 s of a turn (s = 1: any hue), saturation and
    value kept. Another lab's slide can differ from the training lab's mostly in hue (DeepBioNet: cyan or
    yellow-green background where PBC's is beige-pink; purple eosinophil granules where PBC's are orange);
    ``colour`` turns it by +-0.06 s only."""
    delta = tf.random.uniform([], -R.HUE_TURN * s, R.HUE_TURN * s)
    return tf.clip_by_value(tf.image.adjust_hue(x / 255.0, delta), 0.0, 1.0) * 255.0


def _grey(x, s):
    """The cell by density and texture alone: blended toward its luminance by s (s = 1: grey). The
    model's eosinophil cue is mostly the granules' hue against the nucleus (PBC eosinophils shown in grey:
    43 % right); another stain can give them the nucleus' hue (DeepBioNet: purple), which a uniform hue turn
    never teaches."""
    grey = tf.reduce_sum(x * tf.constant(R.LUMA), axis=-1, keepdims=True)
    return x + s * (grey - x)


def _stain(x, s):
    """Beer-Lambert: scale and shift each channel's optical density (stain strength and hue drift)."""
    od = -tf.math.log((x + 1.0) / 256.0)
    alpha = tf.random.uniform([1, 1, 3], 1 - R.STAIN_SCALE * s, 1 + R.STAIN_SCALE * s)
    beta = tf.random.uniform([1, 1, 3], -R.STAIN_SHIFT * s, R.STAIN_SHIFT * s)
    od = tf.maximum(od * alpha + beta, 0.0)
    return tf.clip_by_value(256.0 * tf.exp(-od) - 1.0, 0.0, 255.0)


def _domain(x, s):
    """Another lab's slide: stain densities rescaled per channel (0.45x-2.2x at s=1) and mixed across
    channels (another stain's hue), then another lamp's and camera's white balance (+-20 % per channel).

    Measured between PBC and another lab (DeepBioNet, edge/ood.py stats): red-cell OD differs by ~2x
    in R and G, nuclear OD by 0.3-0.5x in R and B: far beyond ``stain``'s +-30 %.
    """
    od = -tf.math.log((x + 1.0) / 256.0)
    gain = tf.exp(tf.random.uniform([3], -R.DOMAIN_GAIN * s, R.DOMAIN_GAIN * s))
    off = tf.random.uniform([3, 3], -R.DOMAIN_MIX * s, R.DOMAIN_MIX * s) * (1.0 - tf.eye(3))
    od = tf.maximum(tf.tensordot(od * gain, tf.eye(3) + off, axes=1), 0.0)
    wb = tf.exp(tf.random.uniform([1, 1, 3], -R.DOMAIN_WB * s, R.DOMAIN_WB * s))
    return tf.clip_by_value((256.0 * tf.exp(-od) - 1.0) * wb, 0.0, 255.0)


def _gaussian_kernel(sigma, radius=R.BLUR_RADIUS):
    r = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-(r**2) / (2.0 * sigma**2))
    k = k / tf.reduce_sum(k)
    return k


def _blur(x, s):
    sigma = tf.random.uniform([], R.BLUR_SIGMA[0], R.BLUR_SIGMA[0] + R.BLUR_SIGMA[1] * s)
    k = _gaussian_kernel(sigma)
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    y = tf.nn.depthwise_conv2d(x[None], kx, [1, 1, 1, 1], "SAME")
    y = tf.nn.depthwise_conv2d(y, ky, [1, 1, 1, 1], "SAME")
    return y[0]


def _noise(x, s):
    lo, span = R.NOISE_SIGMA
    return x + tf.random.normal(tf.shape(x), 0.0, tf.random.uniform([], lo, lo + span * s))


SHOT_PHOTONS = 200.0  # photons at full white for the mildest shot noise (barely visible)


def _shot(x, s):
    """Shot noise: each pixel a Poisson count of photons, as a camera in dim light sees them.

    The photon budget at full white is log-uniform between 200 and 200 * 0.04**s
    (8 at strength 1, 40 at 0.5); fewer photons, more noise, and more of it in bright pixels.
    """
    top = tf.math.log(SHOT_PHOTONS)
    photons = tf.exp(tf.random.uniform([], top + s * tf.math.log(0.04), top))
    counts = tf.random.poisson([], tf.clip_by_value(x, 0.0, 255.0) / 255.0 * photons)
    return counts / photons * 255.0


def _jpeg(x, s):
    top, span, best = R.JPEG_QUALITY
    q = tf.random.uniform([], int(top - span * s), best, tf.int32)
    y = tf.image.adjust_jpeg_quality(tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8), q)
    return tf.cast(y, tf.float32)


def _blots(x, s):
    """1-3 soft dark blots (stain precipitate, ink, dirt on the slide) up to a quarter of the crop wide."""
    size = tf.cast(tf.shape(x)[0], tf.float32)
    yy, xx = tf.meshgrid(tf.range(size), tf.range(size), indexing="ij")
    k, (r0, r1) = R.BLOTS, R.BLOT_RADIUS
    n = tf.random.uniform([], 1, k + 1, tf.int32)
    cy = tf.random.uniform([k, 1, 1], 0.0, size)
    cx = tf.random.uniform([k, 1, 1], 0.0, size)
    ry = tf.random.uniform([k, 1, 1], r0, r0 + r1 * s) * size
    rx = tf.random.uniform([k, 1, 1], r0, r0 + r1 * s) * size
    d = tf.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)  # 1 on each ellipse's edge
    masks = tf.sigmoid((1.0 - d) * R.BLOT_EDGE) * tf.cast(tf.range(k) < n, tf.float32)[:, None, None]
    dark = tf.random.uniform([], *R.BLOT_DARKNESS)
    return x * (1.0 - dark * tf.reduce_max(masks, axis=0)[..., None])


def hed_jitter(x, alpha, beta):
    """Scale (``alpha``) and shift (``beta``) each of the H, E, DAB stain densities, shape [3] each.

    Pixels go to optical density (Beer-Lambert), are unmixed into stain densities,
    jittered, and mixed back; alpha 1 and beta 0 return the image unchanged.
    """
    od = -tf.math.log((x + 1.0) / 256.0)
    hed = tf.tensordot(od, HED_FROM_RGB, 1) * alpha + beta
    od = tf.tensordot(hed, RGB_FROM_HED, 1)
    return tf.clip_by_value(256.0 * tf.exp(-tf.maximum(od, 0.0)) - 1.0, 0.0, 255.0)


def _hed(x, s):
    alpha = tf.random.uniform([3], 1 - R.HED_SCALE * s, 1 + R.HED_SCALE * s)
    beta = tf.random.uniform([3], -R.HED_SHIFT * s, R.HED_SHIFT * s)
    return hed_jitter(x, alpha, beta)


def _warp(x, transform):
    """Resample ``x`` through an 8-number projective transform (output -> input), reflected borders."""
    y = tf.raw_ops.ImageProjectiveTransformV3(images=x[None], transforms=tf.reshape(transform, [1, 8]),
                                              output_shape=tf.shape(x)[:2], fill_value=0.0,
                                              interpolation="BILINEAR", fill_mode="REFLECT")
    return y[0]


def rotate(x, degrees):
    """Rotate about the centre by ``degrees``, reflected borders."""
    t = degrees * np.pi / 180.0
    c, s_ = tf.cos(t), tf.sin(t)
    cy = (tf.cast(tf.shape(x)[0], tf.float32) - 1) / 2
    cx = (tf.cast(tf.shape(x)[1], tf.float32) - 1) / 2
    return _warp(x, tf.stack([c, -s_, cx - c * cx + s_ * cy, s_, c, cy - s_ * cx - c * cy, 0.0, 0.0]))


def _rotate(x, s):
    return rotate(x, tf.random.uniform([], -R.ROTATE_DEG * s, R.ROTATE_DEG * s))


def _signed(m):
    return m * tf.where(tf.random.uniform([]) < 0.5, -1.0, 1.0)


def _blend(a, b, factor):
    """PIL ImageEnhance: factor 0 gives ``a``, 1 gives ``b``, beyond 1 extrapolates."""
    return a + factor * (b - a)


def _enhance(base, x, m):
    """A PIL-style enhancement of ``x`` away from ``base`` by a random factor 1 +- 0.9 m."""
    return _blend(base, x, 1.0 + _signed(0.9 * m))


def _ra_ops(m):
    """RandAugment's ops at magnitude ``m`` (0..1), each image -> image in 0..255 (equalize left out)."""
    def shear(x, axis):
        k = _signed(0.3 * m)
        c = (tf.cast(tf.shape(x)[1 - axis], tf.float32) - 1) / 2
        t = [1.0, k, -k * c, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0 else [1.0, 0.0, 0.0, k, 1.0, -k * c, 0.0, 0.0]
        return _warp(x, tf.stack(t))

    def translate(x, axis):
        d = _signed(0.3 * m) * tf.cast(tf.shape(x)[1 - axis], tf.float32)
        return _warp(x, tf.stack([1.0, 0.0, d, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0
                                 else [1.0, 0.0, 0.0, 0.0, 1.0, d, 0.0, 0.0]))

    def grey(x):
        return tf.reduce_sum(x * R.LUMA, -1, keepdims=True) + tf.zeros_like(x)

    def sharpness(x):
        k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
        smooth = tf.nn.depthwise_conv2d(x[None], tf.tile(k[:, :, None, None], [1, 1, 3, 1]), [1] * 4, "SAME")[0]
        return _enhance(smooth, x, m)

    def posterize(x):
        shift = tf.cast(tf.round(4.0 * m), tf.int32)
        q = tf.bitwise.left_shift(tf.bitwise.right_shift(tf.cast(tf.clip_by_value(x, 0, 255), tf.int32), shift), shift)
        return tf.cast(q, tf.float32)

    def autocontrast(x):
        lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
        hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
        return tf.where(hi > lo, (x - lo) * 255.0 / tf.maximum(hi - lo, 1e-3), x)

    return [
        lambda x: x,
        lambda x: rotate(x, _signed(30.0 * m)),
        lambda x: shear(x, 0), lambda x: shear(x, 1),
        lambda x: translate(x, 0), lambda x: translate(x, 1),
        lambda x: _enhance(tf.zeros_like(x), x, m),  # brightness
        lambda x: _enhance(tf.reduce_mean(grey(x)) + tf.zeros_like(x), x, m),  # contrast
        lambda x: _enhance(grey(x), x, m),  # colour (saturation)
        sharpness,
        posterize,
        lambda x: tf.where(x >= 256.0 - 256.0 * m, 255.0 - x, x),  # solarize
        autocontrast,
    ]


RANDAUGMENT_OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness",
                   "contrast", "colour", "sharpness", "posterize", "solarize", "autocontrast")


def _clipped_ra_ops(m):
    return [lambda x, f=f: tf.clip_by_value(f(x), 0.0, 255.0) for f in _ra_ops(m)]


def randaugment_op(x, index: int, m: float):
    """One RandAugment op by index into ``RANDAUGMENT_OPS`` (for tests and inspection)."""
    return _clipped_ra_ops(m)[index](x)


def _randaugment(x, s, n: int = 2):
    """``n`` ops drawn uniformly per image, each at magnitude ``s``."""
    ops = _clipped_ra_ops(s)
    for _ in range(n):
        x = tf.switch_case(tf.random.uniform([], 0, len(ops), tf.int32), [lambda y=x, f=f: f(y) for f in ops])
    return x


def _debris(x, s, rbc_px: float | None = None):
    """Debris on the slide at its physical size (``native_corruptions.slide_debris``): one of specks and
    fibres, stain deposits or bubbles, at a severity up to 5 * s, sized in µm from ``rbc_px`` (the red-cell
    diameter in this image's pixels; None: 18 px per 96, PBC's scale). Drawn by OpenCV on the host."""
    from scopelite.edge.field import DEFAULT_MODEL_RBC_PX  # noqa: PLC0415

    from .native_corruptions import px_per_um, slide_debris  # noqa: PLC0415

    def host(img, seed):
        rbc = rbc_px or DEFAULT_MODEL_RBC_PX * img.shape[0] / 96.0
        u8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return slide_debris(u8, float(s), px_per_um(rbc), int(seed)).astype(np.float32)

    seed = tf.random.uniform([], 0, 2**31 - 1, tf.int64)
    y = tf.numpy_function(host, [x, seed], tf.float32, stateful=False)
    return tf.ensure_shape(y, x.shape)


# name -> transform, in the order they are applied (each with probability p * recipe.SHARE[name])
TRANSFORMS = {"rotate": _rotate, "zoom": _zoom_shift, "bgswap": _bgswap, "randaugment": _randaugment, "colour": _colour, "hue": _hue, "grey": _grey,
              "stain": _stain, "hed": _hed, "domain": _domain, "debris": _debris, "blur": _blur, "noise": _noise, "shot": _shot,
              "jpeg": _jpeg, "blots": _blots}
OPS = {name: (TRANSFORMS[name], R.SHARE[name]) for name in AUG_OPS}  # name -> (transform, share of p)
assert tuple(TRANSFORMS) == AUG_OPS


def make_augment(policy: str, strength: float = 0.7, p: float = R.P, ops: dict | None = None,
                 rbc_px: float | None = None, backgrounds: np.ndarray | None = None):
    """A function (image float32 HxWx3 in 0..255) -> augmented image, for ``Dataset.map``.

    Args:
        ops: per-op strengths that add to or override the policy's (see ``resolve_ops``).
        rbc_px: red-cell diameter in the images' pixels (``scale.images_rbc_px``): ``debris`` sizes its
            artefacts in µm from it (None: 18 px per 96 px).
        backgrounds: the training crops' backgrounds (``crop_backgrounds``), which ``bgswap`` draws from
            (None: ``recipe.BACKGROUNDS``).
    """
    chosen = resolve_ops(policy, strength, ops)
    table = {**OPS, "debris": (lambda y, s: _debris(y, s, rbc_px), OPS["debris"][1]),  # debris is sized from rbc_px
             "bgswap": (lambda y, s: _bgswap(y, s, backgrounds), OPS["bgswap"][1])}

    def fn(x):
        if policy == "none" and not chosen:
            return x
        if policy != "none":
            x = _flips(x)
        for name, s in chosen.items():
            transform, share = table[name]
            x = _maybe(p * share, lambda y, t=transform, s=s: t(y, s), x)
        return tf.clip_by_value(x, 0.0, 255.0)

    return fn


def _beta(shape, alpha):
    g1 = tf.random.gamma(shape, alpha)
    g2 = tf.random.gamma(shape, alpha)
    return g1 / (g1 + g2)


def mix_batch(x, y, alpha: float = R.MIX_ALPHA):
    """MixUp or CutMix (coin flip) of a batch with a shuffled copy of itself; labels mixed alike."""
    n = tf.shape(x)[0]
    perm = tf.random.shuffle(tf.range(n))
    x2, y2 = tf.gather(x, perm), tf.gather(y, perm)

    def mixup():
        lam = _beta([n, 1, 1, 1], alpha)
        return lam * x + (1 - lam) * x2, tf.reshape(lam, [n, 1]) * y + (1 - tf.reshape(lam, [n, 1])) * y2

    def cutmix():
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        lam = _beta([], alpha)
        ch = tf.cast(tf.cast(h, tf.float32) * tf.sqrt(1 - lam), tf.int32)
        cw = tf.cast(tf.cast(w, tf.float32) * tf.sqrt(1 - lam), tf.int32)
        y0 = tf.random.uniform([], 0, h - ch + 1, tf.int32)
        x0 = tf.random.uniform([], 0, w - cw + 1, tf.int32)
        mask = tf.pad(tf.ones([ch, cw]), [[y0, h - y0 - ch], [x0, w - x0 - cw]])[None, :, :, None]
        area = tf.cast(ch * cw, tf.float32) / tf.cast(h * w, tf.float32)
        return x * (1 - mask) + x2 * mask, (1 - area) * y + area * y2

    return tf.cond(tf.random.uniform([]) < 0.5, mixup, cutmix)


def make_dataset(images, labels, n_classes: int, batch_size: int, training: bool,
                 policy: str = "flips", strength: float = 0.7, seed: int = 0, image_size: int | None = None,
                 balance: str = "none", mixup: float = 0.0, ops: dict | None = None, rbc_px: float | None = None,
                 ordered: bool = False, drop_remainder: bool = False, backgrounds: np.ndarray | None = None):
    """Batches of (float32 pixels, one-hot labels); shuffled and augmented when training.

    Args:
        image_size: resize to this size (progressive resizing); None keeps the stored size.
        balance: "oversample" draws every class equally often (epoch length unchanged).
        mixup: probability that a batch is mixed (MixUp or CutMix).
        ops: per-op augmentation strengths on top of ``policy`` (``make_augment``).
        rbc_px: red-cell diameter (px) in ``images`` as stored, for ``debris`` (scaled with ``image_size``).
        backgrounds: the crops' backgrounds for ``bgswap`` (``crop_backgrounds``).
        ordered: keep the shuffled order through the parallel map even when training (multi-worker
            training shards the batches by position, so every worker must see the same order).
        drop_remainder: leave out the last, partial batch (multi-worker: a worker's share of it may be empty).
    """
    labels = np.asarray(labels)
    if training and balance == "oversample":
        per_class = [tf.data.Dataset.from_tensor_slices((images[labels == c], labels[labels == c]))
                     .shuffle(int((labels == c).sum()), seed=seed + c).repeat()
                     for c in np.unique(labels)]
        ds = tf.data.Dataset.sample_from_datasets(per_class, seed=seed).take(len(labels))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if training:
            ds = ds.shuffle(min(len(labels), 20000), seed=seed, reshuffle_each_iteration=True)
    resize = image_size is not None and image_size != images.shape[1]
    if rbc_px and resize:
        rbc_px = rbc_px * image_size / images.shape[1]
    aug = make_augment(policy, strength, ops=ops, rbc_px=rbc_px, backgrounds=backgrounds) if training else make_augment("none")

    def prep(x, y):
        x = tf.cast(x, tf.float32)
        if resize:
            x = tf.image.resize(x, [image_size, image_size], method="area")
        return aug(x), tf.one_hot(y, n_classes)

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered or not training).batch(
        batch_size, drop_remainder=drop_remainder)
    if training and mixup > 0:
        ds = ds.map(lambda x, y: tf.cond(tf.random.uniform([]) < mixup, lambda: mix_batch(x, y), lambda: (x, y)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
