"""The training recipe that both trainers read: augmentation ops, their ranges, class weights.

``celltrain fit`` spells the augmentation in TensorFlow ops inside tf.data, one image at a
time (``augment.py``); ``celltrain fit --backend keras3`` spells it in backend-neutral
``keras.ops`` on whole batches on the accelerator (``keras3_augment.py``), for GPU machines
that have JAX and no TensorFlow. Both take every number from here, so the recipe changes in
one place. No TensorFlow and no Keras in this module: the Keras 3 trainer imports it on
machines without them.

Each range is at strength ``s`` (0..1) and scales linearly with it.
"""
from __future__ import annotations

import numpy as np

from .config import AUG_OPS, check_aug

POLICIES = ("none", "flips", "strong")
# the ops "strong" turns on, each at --strength (the others are added with --aug NAME=S)
STRONG = ("zoom", "colour", "stain", "blur", "noise", "jpeg", "blots")
P = 0.5  # probability that an op is applied to an image, times the op's share below
SHARE = {"rotate": 1.0, "zoom": 1.0, "bgswap": 1.0, "randaugment": 1.0, "colour": 1.0, "hue": 1.0, "grey": 0.6, "stain": 1.0, "hed": 1.0, "domain": 1.0,
         "debris": 0.5, "blur": 0.6, "noise": 0.6, "shot": 0.5, "jpeg": 0.5, "blots": 0.3}
assert tuple(SHARE) == AUG_OPS  # the order ops are applied in

ROTATE_DEG = 15.0  # rotate: uniform in +-15 degrees * s about the centre, reflected borders
ZOOM = 0.15  # zoom: scale uniform in 1 +- 0.15 * s
SHIFT_PX = 6.0  # ... and shift uniform in +-6 px * s at 96 px (in proportion at other sizes)
SHIFT_AT = 96.0
BRIGHTNESS = 0.25  # colour: brightness +- 0.25 * s of full scale,
CONTRAST = 0.45  # contrast factor 1 +- 0.45 * s,
SATURATION = 0.6  # saturation factor 1 +- 0.6 * s,
HUE = 0.06  # hue +- 0.06 * s of a turn,
GAMMA = 0.35  # gamma exp(+- 0.35 * s)
HUE_TURN = 0.5  # hue: the hue rotated by a uniform +- 0.5 * s of a turn (s = 1: any hue; colour's is +- 0.06 s)
BG_BRIGHTEST = 0.4  # bgswap: a crop's background is the mean of its brightest 40 % of pixels (by LUMA)
BG_MAX_GAIN = 2.0  # ... and no channel is scaled by more than 2x or less than 1/2
BACKGROUNDS = [[235.0, 235.0, 235.0], [232.0, 214.0, 222.0], [200.0, 225.0, 230.0], [225.0, 228.0, 200.0]]
# ... drawn from the training crops' own backgrounds in celltrain fit; these (white, pink, cyan, yellow) otherwise
LUMA = [0.299, 0.587, 0.114]  # grey (and colour's saturation): the luminance weights of RGB (ITU-R BT.601)
STAIN_SCALE, STAIN_SHIFT = 0.3, 0.08  # stain: each channel's optical density * (1 +- 0.3 s) + (+- 0.08 s)
HED_SCALE, HED_SHIFT = 0.3, 0.05  # hed: each stain density (H, E, DAB) * (1 +- 0.3 s) + (+- 0.05 s)
DOMAIN_GAIN = 0.8  # domain: each channel's optical density * exp(+- 0.8 s),
DOMAIN_MIX = 0.25  # mixed across channels by up to +- 0.25 s,
DOMAIN_WB = 0.2  # then a white balance exp(+- 0.2 s) per channel
BLUR_SIGMA = (0.3, 2.2)  # blur: Gaussian sigma uniform in 0.3 .. 0.3 + 2.2 * s px
BLUR_RADIUS = 4  # kernel taps each side
NOISE_SIGMA = (1.0, 14.0)  # noise: Gaussian sigma uniform in 1 .. 1 + 14 * s grey levels
JPEG_QUALITY = (90, 75, 95)  # jpeg: quality uniform in 90 - 75 * s .. 95
BLOTS = 3  # blots: 1..3 soft dark ellipses,
BLOT_RADIUS = (0.02, 0.12)  # radii uniform in 0.02 .. 0.02 + 0.12 * s of the crop,
BLOT_DARKNESS = (0.5, 1.0)  # darkening uniform in 0.5 .. 1
BLOT_EDGE = 6.0  # sigmoid sharpness of a blot's edge
MIX_ALPHA = 0.4  # MixUp / CutMix: Beta(0.4, 0.4)

# rgb_from_hed of Ruifrok & Johnston (2001), as in scikit-image: rows are the H, E and DAB stain vectors
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


def resolve_ops(policy: str, strength: float, overrides: dict | None = None) -> dict[str, float]:
    """The ops a policy applies and their strengths; ``overrides`` sets (0: removes) single ops."""
    if policy not in POLICIES:
        raise ValueError(f"augmentation policy {policy!r} not one of {POLICIES}")
    ops = {name: strength for name in STRONG} if policy == "strong" else {}
    for name, value in (overrides or {}).items():
        checked = check_aug(name, value)
        ops[name] = strength if checked is None else checked
    return {name: ops[name] for name in AUG_OPS if ops.get(name, 0.0) > 0.0}


def blur_sigmas(s: float, n: int = 4) -> list[float]:
    """``n`` sigmas spread evenly over the blur range at strength ``s`` (the batched spelling picks one)."""
    lo, span = BLUR_SIGMA
    return [lo + span * s * (i + 0.5) / n for i in range(n)]


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights n / (k * count_c): rare classes count as much as common ones.

    k is the number of classes present (a lab's data may hold only some), so the weights
    average 1 over the images whatever is missing.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    k = max(int((counts > 0).sum()), 1)
    return {c: float(len(labels) / (k * max(counts[c], 1))) for c in range(n_classes)}
