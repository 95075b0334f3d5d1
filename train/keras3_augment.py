"""celltrain's augmentation in backend-neutral ``keras.ops``, on whole batches on the accelerator.

The same ops as ``augment.py`` (which runs them in tf.data, one image at a time), with every
range from ``recipe.py``; each op is drawn per image with probability ``recipe.P`` times its
share, in the same order. Where the batched spelling differs:

* flips are the 8 dihedral views drawn as three coin flips (left-right, up-down, transpose),
  the same uniform distribution as tf.data's flips plus rot90;
* ``blur`` picks one of four Gaussian sigmas spread over the op's range (a per-image kernel is
  not a batched op); ``zoom`` resamples through one affine transform;
* ``jpeg`` is applied on the host, before the others (keras.ops has no JPEG codec): see
  ``keras3.jpeg_copies``; MixUp/CutMix too (labels never reach a layer);
* ``randaugment``, ``bgswap``, ``shot`` and ``debris`` are not spelled here (``UNBATCHED``): the trainer
  refuses them; continue the imported run with ``celltrain fit --aug randaugment`` on tf-keras.

Nothing here imports TensorFlow: the ``keras`` module is passed in.
"""
from __future__ import annotations

import math

import numpy as np

from . import recipe as R
from .config import AUG_OPS

HOST = ("jpeg",)
BATCHED = ("rotate", "zoom", "colour", "hue", "grey", "stain", "hed", "domain", "blur", "noise", "blots")
UNBATCHED = tuple(op for op in AUG_OPS if op not in BATCHED + HOST)


def hed_jitter(ops, x, alpha, beta):
    """``augment.hed_jitter`` on a batch: each stain density scaled by ``alpha``, shifted by ``beta`` (n,1,1,3)."""
    od = -ops.log((x + 1.0) / 256.0)
    hed = ops.einsum("nhwi,io->nhwo", od, R.HED_FROM_RGB) * alpha + beta
    od = ops.einsum("nhwi,io->nhwo", hed, R.RGB_FROM_HED)
    return ops.clip(256.0 * ops.exp(-ops.maximum(od, 0.0)) - 1.0, 0.0, 255.0)


def rotate(keras, x, degrees):
    """``augment.rotate`` on a batch: each image about its centre by ``degrees`` (n, 1), reflected borders."""
    ops = keras.ops
    n, size = ops.shape(x)[0], x.shape[1]
    ctr = (size - 1) / 2.0
    th = degrees * (math.pi / 180.0)
    cs, sn = ops.cos(th), ops.sin(th)
    zero = ops.zeros((n, 1))
    t = ops.concatenate([cs, -sn, ctr - cs * ctr + sn * ctr, sn, cs, ctr - sn * ctr - cs * ctr, zero, zero], axis=1)
    return keras.ops.image.affine_transform(x, t, interpolation="bilinear", fill_mode="reflect")


def make_layer(keras, ops: dict[str, float], flips: bool = True, p: float = R.P, seed: int = 0):
    """A Keras 3 layer that augments a batch of 0..255 float pixels when ``training``, else passes it on.

    Args:
        ops: op -> strength, as ``recipe.resolve_ops`` gives them; ``jpeg`` is left to the host.
        flips: the 8 dihedral views (policies "flips" and "strong").
    """
    bad = [op for op in ops if op in UNBATCHED]
    if bad:
        raise ValueError(f"the Keras 3 trainer does not spell {', '.join(bad)}")
    chosen = {name: s for name, s in ops.items() if name in BATCHED}
    K, rnd = keras.ops, keras.random

    class Augment(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(dtype="float32", **kw)
            self.gen = keras.random.SeedGenerator(seed)

        def u(self, shape, lo, hi):
            return rnd.uniform(shape, lo, hi, seed=self.gen)

        def coin(self, n, prob):
            return K.reshape(K.cast(self.u((n,), 0.0, 1.0) < prob, "float32"), (n, 1, 1, 1))

        def pick(self, m, a, b):
            return m * a + (1.0 - m) * b

        def call(self, x, training=None):
            if not training:
                return x
            x = K.cast(x, "float32")
            n = K.shape(x)[0]
            if flips:
                x = self.pick(self.coin(n, 0.5), K.flip(x, 2), x)
                x = self.pick(self.coin(n, 0.5), K.flip(x, 1), x)
                x = self.pick(self.coin(n, 0.5), K.transpose(x, (0, 2, 1, 3)), x)
            for name, s in chosen.items():
                x = self.pick(self.coin(n, p * R.SHARE[name]), getattr(self, name)(x, n, s), x)
            return K.clip(x, 0.0, 255.0)

        def rotate(self, x, n, s):
            return rotate(keras, x, self.u((n, 1), -R.ROTATE_DEG * s, R.ROTATE_DEG * s))

        def zoom(self, x, n, s):
            size = x.shape[1]
            ctr, zero = (size - 1) / 2.0, K.zeros((n, 1))
            inv = 1.0 / self.u((n, 1), 1.0 - R.ZOOM * s, 1.0 + R.ZOOM * s)
            sh = R.SHIFT_PX * s * size / R.SHIFT_AT
            t = self.u((n, 2), -sh, sh)
            m = K.concatenate([inv, zero, ctr - ctr * inv + t[:, :1], zero, inv, ctr - ctr * inv + t[:, 1:],
                               zero, zero], axis=1)
            return keras.ops.image.affine_transform(x, m, interpolation="bilinear", fill_mode="reflect")

        def colour(self, x, n, s):
            y = x / 255.0 + self.u((n, 1, 1, 1), -R.BRIGHTNESS * s, R.BRIGHTNESS * s)
            mean = K.mean(y, axis=(1, 2), keepdims=True)
            y = (y - mean) * self.u((n, 1, 1, 1), 1 - R.CONTRAST * s, 1 + R.CONTRAST * s) + mean
            grey = K.sum(y * K.convert_to_tensor(R.LUMA), axis=-1, keepdims=True)
            y = grey + (y - grey) * self.u((n, 1, 1, 1), 1 - R.SATURATION * s, 1 + R.SATURATION * s)
            # hue: a rotation of the colour cube about its grey diagonal by +-HUE * s of a turn
            th = self.u((n,), -R.HUE * s, R.HUE * s) * 2.0 * math.pi
            cs, sn, c = K.cos(th), K.sin(th), 1.0 / math.sqrt(3.0)
            a, b = cs + (1 - cs) / 3.0, (1 - cs) / 3.0
            rot = K.stack([K.stack([a, b - c * sn, b + c * sn], -1),
                           K.stack([b + c * sn, a, b - c * sn], -1),
                           K.stack([b - c * sn, b + c * sn, a], -1)], 1)  # (n, 3 out, 3 in)
            y = K.einsum("nhwi,noi->nhwo", y, rot)
            gamma = K.exp(self.u((n, 1, 1, 1), -R.GAMMA * s, R.GAMMA * s))
            return K.power(K.clip(y, 0.0, 1.0), gamma) * 255.0

        def hue(self, x, n, s):  # augment._hue: the hue turned by up to +-HUE_TURN * s of a turn, in HSV
            hsv = keras.ops.image.rgb_to_hsv(K.clip(x, 0.0, 255.0) / 255.0)
            h = hsv[..., :1] + self.u((n, 1, 1, 1), -R.HUE_TURN * s, R.HUE_TURN * s)
            hsv = K.concatenate([h - K.floor(h), hsv[..., 1:]], axis=-1)
            return keras.ops.image.hsv_to_rgb(hsv) * 255.0

        def grey(self, x, n, s):  # augment._grey: blended toward the luminance by s
            return x + s * (K.sum(x * K.convert_to_tensor(R.LUMA), axis=-1, keepdims=True) - x)

        def stain(self, x, n, s):
            od = -K.log((x + 1.0) / 256.0)
            od = K.maximum(od * self.u((n, 1, 1, 3), 1 - R.STAIN_SCALE * s, 1 + R.STAIN_SCALE * s)
                           + self.u((n, 1, 1, 3), -R.STAIN_SHIFT * s, R.STAIN_SHIFT * s), 0.0)
            return K.clip(256.0 * K.exp(-od) - 1.0, 0.0, 255.0)

        def hed(self, x, n, s):
            return hed_jitter(K, x, self.u((n, 1, 1, 3), 1 - R.HED_SCALE * s, 1 + R.HED_SCALE * s),
                              self.u((n, 1, 1, 3), -R.HED_SHIFT * s, R.HED_SHIFT * s))

        def domain(self, x, n, s):  # augment._domain: another lab's stain densities, mixing and white balance
            od = -K.log((x + 1.0) / 256.0)
            gain = K.exp(self.u((n, 1, 1, 3), -R.DOMAIN_GAIN * s, R.DOMAIN_GAIN * s))
            off = self.u((n, 3, 3), -R.DOMAIN_MIX * s, R.DOMAIN_MIX * s) * (1.0 - K.eye(3))
            od = K.maximum(K.einsum("nhwi,nio->nhwo", od * gain, K.eye(3) + off), 0.0)
            wb = K.exp(self.u((n, 1, 1, 3), -R.DOMAIN_WB * s, R.DOMAIN_WB * s))
            return K.clip((256.0 * K.exp(-od) - 1.0) * wb, 0.0, 255.0)

        def blur(self, x, n, s):
            r = np.arange(-R.BLUR_RADIUS, R.BLUR_RADIUS + 1, dtype=np.float32)
            choice = K.floor(self.u((n,), 0.0, 4.0))
            out = 0.0
            for i, sigma in enumerate(R.blur_sigmas(s, 4)):
                k = np.exp(-(r**2) / (2 * sigma**2))
                k = k / k.sum()
                kx = K.convert_to_tensor(np.tile(k.reshape(1, -1, 1, 1), (1, 1, 3, 1)))
                ky = K.convert_to_tensor(np.tile(k.reshape(-1, 1, 1, 1), (1, 1, 3, 1)))
                bi = K.depthwise_conv(K.depthwise_conv(x, kx, 1, "same"), ky, 1, "same")
                out = out + K.reshape(K.cast(choice == i, "float32"), (n, 1, 1, 1)) * bi
            return out

        def noise(self, x, n, s):
            sigma = self.u((n, 1, 1, 1), R.NOISE_SIGMA[0], R.NOISE_SIGMA[0] + R.NOISE_SIGMA[1] * s)
            return x + rnd.normal(K.shape(x), seed=self.gen) * sigma

        def blots(self, x, n, s):
            size, k, (r0, r1) = x.shape[1], R.BLOTS, R.BLOT_RADIUS
            grid = K.cast(K.arange(size), "float32")
            yy, xx = K.reshape(grid, (1, 1, size, 1)), K.reshape(grid, (1, 1, 1, size))
            cy, cx = self.u((n, k, 1, 1), 0.0, size), self.u((n, k, 1, 1), 0.0, size)
            ry = self.u((n, k, 1, 1), r0, r0 + r1 * s) * size
            rx = self.u((n, k, 1, 1), r0, r0 + r1 * s) * size
            d = K.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)  # 1 on each ellipse's edge
            count = K.floor(self.u((n, 1, 1, 1), 1.0, k + 1.0))
            keep = K.cast(K.reshape(K.cast(K.arange(k), "float32"), (1, k, 1, 1)) < count, "float32")
            mask = K.max(K.sigmoid((1.0 - d) * R.BLOT_EDGE) * keep, axis=1)[..., None]
            dark = self.u((n, 1, 1, 1), *R.BLOT_DARKNESS)
            return x * (1.0 - dark * mask)

    return Augment(name="augment")
