"""Uneven illumination: the lamp's brightness across a frame, and the frame with it divided out. Pure numpy + OpenCV.

Field mode reads each frame against its own background colour (``stain.py``): optical density is
``-log(I / I_background)``. A lamp that is not centred, or a condenser out of adjustment, lights one side
or the middle more than the corners; against one background colour a dimmed corner then reads as
stained (a darker OD everywhere there), and cells there are missed or misjudged. The empty slide
between the cells is the brightest thing in a field, so the lamp's profile is read from it: the bright
end of each block of a small copy of the frame, fitted with a smooth surface (a quadratic in log
brightness) that passes over blocks covered by cells. Only a frame whose profile falls off by more
than ``UNEVEN`` is corrected; an evenly lit frame is returned as it is.

Too much light is read too: a camera exposed too long (or a lamp too bright) clips the empty slide to pure
white, and the red cells, barely tinted, fade into it (``overexposed``).
"""
from __future__ import annotations

import cv2
import numpy as np

from .stain import is_greyscale

UNEVEN = 0.10  # the profile's darkest point this far below its brightest: corrected (else left alone)
ADVISE = 0.30  # falling off this far over most frames: watch's summary and calibrate advise adjusting the lamp
SMALL = 64  # the small copy's longer side (px)
BLOCKS = 8  # blocks along the longer side
PERCENTILE = 90.0  # of grey in each block: the empty slide, where the block has some
MIN_BLOCKS = 12  # fewer usable blocks (a frame filled with cells): no profile
FLOOR = 0.1  # the profile is not taken below this: at most 10x brighter (black outside a field stop stays dark)
OVEREXPOSED = 0.20  # this share of the frame pure white (all three channels >= CLIPPED): overexposed
CLIPPED = 254


def _design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def lamp_profile(frame_rgb: np.ndarray) -> np.ndarray | None:
    """The lamp's relative brightness over the frame (HxW float32, 1 at its brightest), or None when the
    frame is evenly lit (falls off by less than ``UNEVEN``) or shows too little empty slide to tell."""
    h, w = frame_rgb.shape[:2]
    if min(h, w) < 16:
        return None
    nx = BLOCKS if w >= h else max(int(round(BLOCKS * w / h)), 2)
    ny = BLOCKS if h >= w else max(int(round(BLOCKS * h / w)), 2)
    side = SMALL // BLOCKS  # px of a block in the small copy
    sw, sh = nx * side, ny * side
    grey = cv2.cvtColor(cv2.resize(np.ascontiguousarray(frame_rgb), (sw, sh), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY)
    blocks = grey.reshape(ny, side, nx, side).transpose(0, 2, 1, 3).reshape(ny * nx, side * side)
    values = np.percentile(blocks, PERCENTILE, axis=1)
    cy, cx = np.divmod(np.arange(ny * nx), nx)
    cx, cy = (cx + 0.5) / nx * 2 - 1, (cy + 0.5) / ny * 2 - 1
    v = np.log(np.maximum(values.astype(np.float64), 1.0))
    a = _design(cx, cy)
    keep = np.ones(len(v), bool)
    coef = None
    for _ in range(4):  # blocks much darker than the surface are covered by cells: left out, fitted again
        if keep.sum() < MIN_BLOCKS:
            return None
        coef, *_ = np.linalg.lstsq(a[keep], v[keep], rcond=None)
        resid = v - a @ coef
        spread = max(float(np.median(np.abs(resid[keep] - np.median(resid[keep])))), 0.01)
        new = resid > -2.5 * spread
        if (new == keep).all():
            break
        keep = new
    gx, gy = np.meshgrid((np.arange(sw) + 0.5) / sw * 2 - 1, (np.arange(sh) + 0.5) / sh * 2 - 1)
    surface = _design(gx, gy) @ coef
    rel = np.exp(surface - surface.max()).astype(np.float32)
    if rel.min() > 1.0 - UNEVEN:
        return None
    return cv2.resize(rel, (w, h), interpolation=cv2.INTER_LINEAR)


def flatten(frame_rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame lit evenly (its lamp profile divided out, at the brightest part's level), and how far the
    profile fell off (0: evenly lit, the frame itself returned)."""
    profile = lamp_profile(frame_rgb)
    if profile is None:
        return frame_rgb, 0.0
    gain = cv2.merge([1.0 / np.maximum(profile, FLOOR)] * 3)
    out = cv2.convertScaleAbs(cv2.multiply(frame_rgb.astype(np.float32), gain))  # rounded, saturated at 255
    return out, round(float(1.0 - profile.min()), 3)


def overexposed(frame_rgb: np.ndarray) -> float:
    """The share of the frame that is pure white (every channel at ``CLIPPED`` or above, read on every 4th row
    and column), when it is ``OVEREXPOSED`` or more and the frame holds colour; else 0. A well exposed smear has
    none (PBC's fields, DeepBioNet's: at most 0.1 %); the robustness suite's brightness +35 levels clips up to
    half of a PBC field, +80 two thirds. A frame without colour (an all-white view: no slide) is not called
    overexposed: ``stain.is_greyscale`` says what it is. Only 8-bit RGB frames are read (others: 0)."""
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] < 3 or frame.dtype != np.uint8 or frame.size == 0:
        return 0.0
    sub = np.ascontiguousarray(frame[::4, ::4, :3])
    share = cv2.countNonZero(cv2.inRange(sub, (CLIPPED,) * 3, (255,) * 3)) / (sub.shape[0] * sub.shape[1])
    if share < OVEREXPOSED or is_greyscale(frame):
        return 0.0
    return round(share, 3)
