"""Augmentation inside tf.data, on raw 0..255 float pixels.

``policy`` is "none", "flips" (flips + 90° rotations: a cell has no up) or
"strong": flips plus what the field does to images — zoom/shift, exposure,
contrast, saturation, hue, stain shifts in optical-density space, defocus,
sensor noise, JPEG artefacts and dark blots (stain precipitate, ink) — each
applied with probability ``p`` at ``strength`` (0..1).
"""
from __future__ import annotations

import numpy as np

from ._keras import tf

POLICIES = ("none", "flips", "strong")


def _flips(x):
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    return tf.image.rot90(x, k=tf.random.uniform([], 0, 4, tf.int32))


def _maybe(p, fn, x):
    return tf.cond(tf.random.uniform([]) < p, lambda: fn(x), lambda: x)


def _zoom_shift(x, s):
    """Zoom by up to ±15 %·s and shift by up to 6 px·s; reflected borders, never black ones."""
    size = tf.shape(x)[0]
    pad = size // 3
    y = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    scale = tf.random.uniform([], 1.0 - 0.15 * s, 1.0 + 0.15 * s)
    new = tf.cast(tf.cast(size + 2 * pad, tf.float32) * scale, tf.int32)
    y = tf.image.resize(y, [new, new])
    max_shift = tf.cast(6.0 * s * tf.cast(size, tf.float32) / 96.0, tf.int32) + 1
    off = (new - size) // 2 + tf.random.uniform([2], -max_shift, max_shift, tf.int32)
    off = tf.clip_by_value(off, 0, new - size)
    return tf.image.crop_to_bounding_box(y, off[0], off[1], size, size)


def _colour(x, s):
    x = x / 255.0
    x = tf.image.adjust_brightness(x, tf.random.uniform([], -0.25 * s, 0.25 * s))
    x = tf.image.adjust_contrast(x, tf.random.uniform([], 1 - 0.45 * s, 1 + 0.45 * s))
    x = tf.image.adjust_saturation(x, tf.random.uniform([], 1 - 0.6 * s, 1 + 0.6 * s))
    x = tf.image.adjust_hue(x, tf.random.uniform([], -0.06 * s, 0.06 * s))
    gamma = tf.exp(tf.random.uniform([], -0.35 * s, 0.35 * s))
    x = tf.clip_by_value(x, 0.0, 1.0) ** gamma
    return x * 255.0


def _stain(x, s):
    """Beer-Lambert: scale and shift each channel's optical density (stain strength and hue drift)."""
    od = -tf.math.log((x + 1.0) / 256.0)
    alpha = tf.random.uniform([1, 1, 3], 1 - 0.3 * s, 1 + 0.3 * s)
    beta = tf.random.uniform([1, 1, 3], -0.08 * s, 0.08 * s)
    od = tf.maximum(od * alpha + beta, 0.0)
    return tf.clip_by_value(256.0 * tf.exp(-od) - 1.0, 0.0, 255.0)


def _gaussian_kernel(sigma, radius=4):
    r = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-(r**2) / (2.0 * sigma**2))
    k = k / tf.reduce_sum(k)
    return k


def _blur(x, s):
    sigma = tf.random.uniform([], 0.3, 0.3 + 2.2 * s)
    k = _gaussian_kernel(sigma)
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    y = tf.nn.depthwise_conv2d(x[None], kx, [1, 1, 1, 1], "SAME")
    y = tf.nn.depthwise_conv2d(y, ky, [1, 1, 1, 1], "SAME")
    return y[0]


def _noise(x, s):
    return x + tf.random.normal(tf.shape(x), 0.0, tf.random.uniform([], 1.0, 1.0 + 14.0 * s))


def _jpeg(x, s):
    q = tf.random.uniform([], int(90 - 75 * s), 95, tf.int32)
    y = tf.image.adjust_jpeg_quality(tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8), q)
    return tf.cast(y, tf.float32)


def _blots(x, s):
    """1-3 soft dark blots (stain precipitate, ink, dirt on the slide) up to a quarter of the crop wide."""
    size = tf.cast(tf.shape(x)[0], tf.float32)
    yy, xx = tf.meshgrid(tf.range(size), tf.range(size), indexing="ij")
    n = tf.random.uniform([], 1, 4, tf.int32)
    cy = tf.random.uniform([3, 1, 1], 0.0, size)
    cx = tf.random.uniform([3, 1, 1], 0.0, size)
    ry = tf.random.uniform([3, 1, 1], 0.02, 0.02 + 0.12 * s) * size
    rx = tf.random.uniform([3, 1, 1], 0.02, 0.02 + 0.12 * s) * size
    d = tf.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)  # 1 on each ellipse's edge
    masks = tf.sigmoid((1.0 - d) * 6.0) * tf.cast(tf.range(3) < n, tf.float32)[:, None, None]
    dark = tf.random.uniform([], 0.5, 1.0)
    return x * (1.0 - dark * tf.reduce_max(masks, axis=0)[..., None])


def make_augment(policy: str, strength: float = 0.7, p: float = 0.5):
    """A function (image float32 HxWx3 in 0..255) -> augmented image, for ``Dataset.map``."""
    if policy not in POLICIES:
        raise ValueError(f"augmentation policy {policy!r} not one of {POLICIES}")

    def fn(x):
        if policy == "none":
            return x
        x = _flips(x)
        if policy == "strong":
            x = _maybe(p, lambda y: _zoom_shift(y, strength), x)
            x = _maybe(p, lambda y: _colour(y, strength), x)
            x = _maybe(p, lambda y: _stain(y, strength), x)
            x = _maybe(p * 0.6, lambda y: _blur(y, strength), x)
            x = _maybe(p * 0.6, lambda y: _noise(y, strength), x)
            x = _maybe(p * 0.5, lambda y: _jpeg(y, strength), x)
            x = _maybe(p * 0.3, lambda y: _blots(y, strength), x)
        return tf.clip_by_value(x, 0.0, 255.0)

    return fn


def _beta(shape, alpha):
    g1 = tf.random.gamma(shape, alpha)
    g2 = tf.random.gamma(shape, alpha)
    return g1 / (g1 + g2)


def mix_batch(x, y, alpha: float = 0.4):
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
                 balance: str = "none", mixup: float = 0.0):
    """Batches of (float32 pixels, one-hot labels); shuffled and augmented when training.

    Args:
        image_size: resize to this size (progressive resizing); None keeps the stored size.
        balance: "oversample" draws every class equally often (epoch length unchanged).
        mixup: probability that a batch is mixed (MixUp or CutMix).
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
    aug = make_augment(policy if training else "none", strength)
    resize = image_size is not None and image_size != images.shape[1]

    def prep(x, y):
        x = tf.cast(x, tf.float32)
        if resize:
            x = tf.image.resize(x, [image_size, image_size], method="area")
        return aug(x), tf.one_hot(y, n_classes)

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training).batch(batch_size)
    if training and mixup > 0:
        ds = ds.map(lambda x, y: tf.cond(tf.random.uniform([]) < mixup, lambda: mix_batch(x, y), lambda: (x, y)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
