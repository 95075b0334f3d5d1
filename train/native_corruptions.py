"""Corruptions sized in micrometres, for whole fields at the camera's own resolution.

``scopelite.train.corruptions`` sizes everything in pixels of a 96 px crop, and MedMNIST-C
in pixels of a 224 px image: how large a speck is next to a cell then depends on what
scale the crop was taken at. Here every size is physical. A frame's scale comes from its
red cells (about 7.5 µm across in every smear; ``scopelite.edge.scale`` measures their
diameter in px), so ``px_per_um = red-cell diameter / 7.5`` and a 2 µm speck is drawn
2 µm across at any magnification: on a field at twice the magnification it covers four
times the pixels. How many artefacts there are is a density (per ``REF_AREA_UM2``), so a
1080p field holds more specks than a 96 px crop, as many per cell.

The suite: ``debris`` (dust, specks, fibres), ``stain_deposit`` (stain precipitate:
dark violet granular aggregates, MedMNIST-C's stain_deposit), ``bubbles``,
``defocus_blur``, ``motion_blur`` and ``pixelate`` (a camera with coarser pixels; a
pitch finer than the frame's own pixels changes nothing). Sizes follow the crop suite
at the shipped model's scale (a 96 px crop showing a red cell 18 px across: 0.42 µm a
pixel), so the two protocols differ in where and at what resolution an artefact is
drawn, not in how large it is; the stain deposits are new.

Pure numpy + OpenCV, uint8 RGB in and out; the same image, corruption, severity, scale
and seed always give the same pixels, and positions and sizes are drawn in µm, so a
field and its 2x enlargement get the same artefacts, twice as large in pixels.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
RBC_UM = 7.5  # a red cell's diameter, µm
REF_AREA_UM2 = 1600.0  # artefact densities are per this area: a 96 px crop at 0.42 µm a pixel

# severity 1..5 -> size, µm (the crop suite's sizes x 0.417 µm/px, rounded)
DEFOCUS_RADIUS_UM = (0.4, 0.6, 0.85, 1.1, 1.4)
MOTION_LENGTH_UM = (1.25, 2.1, 2.9, 3.75, 5.0)
PIXEL_PITCH_UM = (0.6, 0.75, 1.0, 1.25, 1.65)
DEBRIS_PER_AREA = (4, 8, 14, 22, 32)
SPECK_RADIUS_UM = (0.25, 1.1)
FIBRE_WIDTH_UM, FIBRE_LENGTH_SD_UM = 0.45, 8.0
BUBBLES_PER_AREA = (1, 2, 3, 4, 6)
BUBBLE_RADIUS_UM, BUBBLE_RIM_UM = (2.5, 7.5), 0.85
DEPOSITS_PER_AREA = (1, 2, 2, 3, 4)
DEPOSIT_RADIUS_UM = (1.5, 2.0, 3.0, 4.0, 5.5)  # the largest aggregate's radius: up to 1.5 red cells across
GRANULE_RADIUS_UM = (0.25, 0.7)


def px_per_um(rbc_px: float) -> float:
    """Pixels per micrometre of a frame whose red cells are ``rbc_px`` across."""
    if not rbc_px or rbc_px <= 0:
        raise ValueError(f"a red-cell diameter must be > 0 px, got {rbc_px}")
    return float(rbc_px) / RBC_UM


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _count(per_area: float, img: np.ndarray, ppu: float, rng: np.random.Generator) -> int:
    """How many artefacts a frame of this area holds (stochastic rounding of density x area)."""
    h, w = img.shape[:2]
    expected = per_area * (h / ppu) * (w / ppu) / REF_AREA_UM2
    return int(expected) + int(rng.random() < expected - int(expected))


def _where(img: np.ndarray, ppu: float, rng: np.random.Generator) -> tuple[float, float]:
    """A random position, drawn in µm (so the same for any magnification), returned in px."""
    h, w = img.shape[:2]
    return rng.uniform(0, w / ppu) * ppu, rng.uniform(0, h / ppu) * ppu


def _box(shape, x0, y0, x1, y1):
    """The pixel grid (integer coordinates are pixel centres) of a box clipped to the frame, or None."""
    h, w = shape[:2]
    xa, ya = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    xb, yb = min(int(np.ceil(x1)) + 2, w), min(int(np.ceil(y1)) + 2, h)
    if xa >= xb or ya >= yb:
        return None
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
    return (slice(ya, yb), slice(xa, xb)), xx, yy


def _cover(d, r):
    """Anti-aliased coverage of the pixels at distance ``d`` from a shape's edge-defining centre: 1 inside
    radius ``r``, 0 beyond it, linear over the pixel across the edge (area-true, unlike OpenCV's AA
    circles, which come out half a pixel too wide: at a few px per speck that is most of the speck)."""
    return np.clip(r + 0.5 - d, 0.0, 1.0)


def _paint(canvas, where, alpha, colour):
    if where is not None:
        sl, a = where[0], alpha[..., None]
        canvas[sl] = canvas[sl] * (1 - a) + np.asarray(colour, np.float32) * a


def _disc(canvas, x, y, r, colour):
    """An opaque disc of radius ``r`` px at (x, y) on a float canvas."""
    where = _box(canvas.shape, x - r, y - r, x + r, y + r)
    if where is not None:
        _paint(canvas, where, _cover(np.hypot(where[1] - x, where[2] - y), r), colour)


def _fibre(canvas, x, y, dx, dy, width, colour):
    """A straight fibre from (x, y) to (x + dx, y + dy), ``width`` px wide, on a float canvas."""
    where = _box(canvas.shape, min(x, x + dx) - width, min(y, y + dy) - width, max(x, x + dx) + width,
                 max(y, y + dy) + width)
    if where is None:
        return
    xx, yy = where[1], where[2]
    t = np.clip(((xx - x) * dx + (yy - y) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    _paint(canvas, where, _cover(np.hypot(xx - x - t * dx, yy - y - t * dy), width / 2), colour)


def defocus_blur(img, s, rng, ppu):
    """Out of focus: a disc blur of DEFOCUS_RADIUS_UM."""
    r = DEFOCUS_RADIUS_UM[s - 1] * ppu
    half = int(np.ceil(r))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    disk = ((xx**2 + yy**2) <= max(r * r, 0.25)).astype(np.float32)
    return _u8(cv2.filter2D(img.astype(np.float32), -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT))


def motion_blur(img, s, rng, ppu):
    """The stage moved during the exposure: a line blur of MOTION_LENGTH_UM at a random angle."""
    length = max(int(round(MOTION_LENGTH_UM[s - 1] * ppu)), 1)
    angle = rng.uniform(0, 180)
    if length < 2:
        return img.copy()
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    return _u8(cv2.filter2D(img.astype(np.float32), -1, k / max(k.sum(), 1e-6), borderType=cv2.BORDER_REFLECT))


def pixelate(img, s, rng, ppu):
    """A camera with coarser pixels: PIXEL_PITCH_UM a pixel (nothing when the frame's are coarser)."""
    f = 1.0 / (PIXEL_PITCH_UM[s - 1] * ppu)
    if f >= 1.0:
        return img.copy()
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(int(round(w * f)), 1), max(int(round(h * f)), 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def debris(img, s, rng, ppu):
    """Dust and specks (discs of SPECK_RADIUS_UM) and, one in five, fibres; dark grey-brown."""
    out = img.astype(np.float32)
    for _ in range(_count(DEBRIS_PER_AREA[s - 1], img, ppu, rng)):
        x, y = _where(img, ppu, rng)
        col = tuple(float(v) for v in rng.uniform(20, 90, 3))
        if rng.random() < 0.2:
            _fibre(out, x, y, *(rng.normal(0, FIBRE_LENGTH_SD_UM, 2) * ppu), FIBRE_WIDTH_UM * ppu, col)
        else:
            _disc(out, x, y, rng.uniform(*SPECK_RADIUS_UM) * ppu, col)
    return _u8(out)


def stain_deposit(img, s, rng, ppu):
    """Stain precipitate: clusters of dark violet granules, each cluster up to DEPOSIT_RADIUS_UM in radius."""
    out = img.astype(np.float32)
    for _ in range(_count(DEPOSITS_PER_AREA[s - 1], img, ppu, rng)):
        x, y = _where(img, ppu, rng)
        radius = rng.uniform(0.4, 1.0) * DEPOSIT_RADIUS_UM[s - 1]  # µm
        base = rng.uniform([50, 20, 70], [95, 55, 130])  # haematoxylin / azure precipitate
        for _ in range(int(np.clip(3 * (radius / 0.6) ** 2, 3, 400))):  # enough granules to fill the cluster
            a, d = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.random())
            col = tuple(float(v) for v in np.clip(base + rng.normal(0, 10, 3), 0, 255))
            _disc(out, x + d * np.cos(a) * ppu, y + d * np.sin(a) * ppu, rng.uniform(*GRANULE_RADIUS_UM) * ppu, col)
    return _u8(out)


def bubbles(img, s, rng, ppu):
    """Air under the cover slip: pale discs of BUBBLE_RADIUS_UM with dark rims BUBBLE_RIM_UM wide."""
    disc = np.zeros(img.shape[:2], np.float32)
    rim = np.zeros(img.shape[:2], np.float32)
    half = BUBBLE_RIM_UM * ppu / 2
    for _ in range(_count(BUBBLES_PER_AREA[s - 1], img, ppu, rng)):
        x, y = _where(img, ppu, rng)
        r = rng.uniform(*BUBBLE_RADIUS_UM) * ppu
        where = _box(img.shape, x - r - half, y - r - half, x + r + half, y + r + half)
        if where is None:
            continue
        sl, d = where[0], np.hypot(where[1] - x, where[2] - y)
        disc[sl] = np.maximum(disc[sl], _cover(d, r))
        rim[sl] = np.maximum(rim[sl], _cover(d, r + half) - _cover(d, r - half))
    a = (disc * 0.35)[..., None]
    b = (rim * 0.6)[..., None]
    out = img * (1 - a) + 255 * a
    return _u8(out * (1 - b) + 60 * b)


NATIVE_CORRUPTIONS: dict[str, Callable] = {
    f.__name__: f for f in (debris, stain_deposit, bubbles, defocus_blur, motion_blur, pixelate)
}
# what each one is called in the crop suite (scopelite.train.corruptions); None: no counterpart there
CROP_COUNTERPART = {"debris": "debris", "stain_deposit": None, "bubbles": "bubbles",
                    "defocus_blur": "defocus_blur", "motion_blur": "motion_blur", "pixelate": "pixelate"}
# the artefacts that lie on the slide (what `celltrain fit --aug debris` draws)
ON_THE_SLIDE = ("debris", "stain_deposit", "bubbles")


def corrupt_native(img: np.ndarray, name: str, severity: int, ppu: float, seed: int = 0) -> np.ndarray:
    """One physically sized corruption of one uint8 RGB image whose scale is ``ppu`` px per µm.

    Deterministic in (name, severity, seed) and, positions and sizes being drawn in µm, the same
    artefacts at any magnification. ``ppu``: ``px_per_um(red-cell diameter in px)``.
    """
    if name not in NATIVE_CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(NATIVE_CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    if not ppu > 0:
        raise ValueError(f"px per µm must be > 0, got {ppu}")
    rng = np.random.default_rng([seed, severity, list(NATIVE_CORRUPTIONS).index(name)])
    return NATIVE_CORRUPTIONS[name](img, severity, rng, float(ppu))


def slide_debris(img: np.ndarray, strength: float, ppu: float, seed: int) -> np.ndarray:
    """The augmentation (``celltrain fit --aug debris=S``): one of ``ON_THE_SLIDE`` at a severity
    drawn from 1 to ``max(1, round(5 * strength))``, sized by the image's own ``ppu``."""
    rng = np.random.default_rng([seed, 7919])
    name = ON_THE_SLIDE[int(rng.integers(len(ON_THE_SLIDE)))]
    severity = int(rng.integers(1, max(1, int(round(5 * strength))) + 1))
    return corrupt_native(img, name, severity, ppu, int(rng.integers(2**31)))
