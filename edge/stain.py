"""Stain layers of a blood-smear frame, relative to the frame itself. Pure numpy + OpenCV.

No lab's colours are assumed. Each frame is turned into optical density against
its own background (``OD = -log(I / I_background)`` per channel), which removes
the illumination and the camera's white balance. Then:

* ``od``: the summed OD. Background ~0, red cells in the middle, stained
  material (nuclei, platelets, granules) highest. A three-class Otsu split gives
  ``t_cell``, the background | cell threshold (the red-cell ruler uses it).
* ``residual``: how far each pixel's OD *colour* is from the red cells' OD colour
  (the component of the OD vector orthogonal to the frame's median red-cell OD
  direction). Red cells, whatever their stain (pink eosin, blue-grey, brown), lie
  on one direction; nuclei and platelets (azure / methylene blue binding to DNA and
  RNA) lie off it. This is colour deconvolution with the red cell as the first
  stain, measured per frame, and it is what finds white cells without assuming a
  pink slide. ``t_stained`` is the two-class Otsu split of the cells' residuals,
  bounded by the red cells' own residual level and spread (see the constants).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The red cells' residual level is the P_BASE-th percentile of the cells' residuals and its spread
# the distance to the (P_BASE + 20)-th: a large white cell may be up to half of the cell pixels.
# The stained threshold is the Otsu split, kept between level + STAINED_K and level + CAP_K spreads
# (the floor: a field with no white cell does not split its red cells in two; the ceiling: a pale
# nucleus beside a dark one is still stained). Chosen on PBC's 160 fields (field mode), generated
# fields and the DeepBioNet detection files at even positions in sorted order; the odd positions are
# the report half.
P_BASE = 25.0
STAINED_K = 3.0
CAP_K = 12.0
_MIN_SPREAD = 0.02  # OD units: a floor for very clean frames
_ONES = np.ones((1, 3), np.float32)  # cv2.transform with it sums the channels (numpy's sum over axis 2 is 30x slower)


@dataclass(frozen=True)
class Layers:
    od: np.ndarray  # HxW float32, summed OD (smoothed)
    residual: np.ndarray  # HxW float32, OD colour distance from the red cells' colour
    t_cell: float  # od above this: a cell (red or white)
    t_stained: float  # residual above this: nucleus / platelet / granule
    od_raw: np.ndarray  # HxWx3 float32, per-channel OD before smoothing (the stain check reads it)
    od_table: np.ndarray | None = None  # 256x3 float32: od_raw is od_table[value, channel] (``od_table``)


def percentile_of_counts(counts: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear) of whole numbers 0..len(counts)-1, given how often each occurs."""
    n = int(counts.sum())
    idx = q / 100 * (n - 1)
    lo = int(np.floor(idx))
    cum = np.cumsum(counts)
    v_lo, v_hi = int(np.searchsorted(cum, lo + 1)), int(np.searchsorted(cum, min(lo + 2, n)))
    return v_lo + (v_hi - v_lo) * (idx - lo)


def every_other(image: np.ndarray) -> np.ndarray:
    """``image[::2, ::2]`` as a contiguous array; for even sides through OpenCV's nearest-neighbour halving,
    which picks exactly those pixels (numpy's strided copy of a colour image is 3x slower)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0 and h >= 2 and w >= 2:
        return cv2.resize(np.ascontiguousarray(image), (w // 2, h // 2), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(image[::2, ::2])


def frame_background(frame_rgb: np.ndarray) -> np.ndarray:
    """The frame's background (empty slide) colour, RGB float64: the 75th percentile of each channel over
    the pixels brighter than the 60th percentile of grey (every other row and column)."""
    channels = cv2.split(every_other(frame_rgb[..., :3]))  # numpy's reductions over axis 2 are slow
    grey3 = cv2.add(cv2.add(channels[0], channels[1], dtype=cv2.CV_16U), channels[2], dtype=cv2.CV_16U)  # 3 x grey
    bright = grey3 > percentile_of_counts(np.bincount(grey3.ravel(), minlength=766), 60)
    if bright.any():
        return np.array([percentile_of_counts(np.bincount(c[bright], minlength=256), 75) for c in channels],
                        np.float64)
    return frame_rgb.reshape(-1, 3).max(axis=0).astype(np.float64)


GREY_TOLERANCE = 2.0  # mean |R - G| and |G - B| (uint8 levels) under which a frame holds no colour


def is_greyscale(frame_rgb: np.ndarray) -> bool:
    """Whether a frame holds no colour (a camera in monochrome mode, a grey file, a blank white frame): field
    mode finds cells by their stain colour and the models were trained on colour, so say so."""
    sub = np.asarray(frame_rgb)[::4, ::4].astype(np.int16)
    if sub.ndim != 3 or sub.shape[2] < 3:
        return True
    return bool(np.abs(sub[..., 0] - sub[..., 1]).mean() < GREY_TOLERANCE
                and np.abs(sub[..., 1] - sub[..., 2]).mean() < GREY_TOLERANCE)


DARK_LEVEL = 32  # median of each pixel's brightest channel under which a frame is dark: the lamp off (real fields:
# 140-204, 78 at the robustness suite's brightness_down severity 5; a lamp off with a colour camera's noise: 6-10)


def is_dark(frame_rgb: np.ndarray) -> bool:
    """Whether a frame is dark (the lamp off, a shutter closed), colour noise or not: nothing on it is a cell."""
    sub = np.asarray(frame_rgb)[::4, ::4]
    return bool(sub.ndim == 3 and np.median(sub.max(axis=2)) < DARK_LEVEL)


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    """Colour without brightness: each channel's share of the sum (rows of RGB in, rows of 3 out)."""
    rgb = np.asarray(rgb, np.float64).reshape(-1, 3)
    return rgb / np.maximum(rgb.sum(axis=1, keepdims=True), 1e-9)


def optical_density(frame_rgb: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """Per-channel OD against the frame's background (brightest pixels), HxWx3 float32 >= 0.

    The background is the 75th percentile of each channel over the pixels brighter than the
    60th percentile of grey (every other row and column); percentiles of uint8 values come
    from their counts, and OD, a function of a channel's uint8 value alone, from a 256-entry table.
    """
    table = od_table(frame_rgb) if table is None else table  # ``od_table``'s, when the caller keeps it too
    return cv2.LUT(np.ascontiguousarray(frame_rgb), table.reshape(256, 1, 3))


def od_table(frame_rgb: np.ndarray) -> np.ndarray:
    """256x3 float32: the OD of each uint8 value of each channel against the frame's background. It falls as
    the value rises (0 at and above the background)."""
    background = frame_background(frame_rgb) + 1.0
    v = np.arange(256, dtype=np.float32)[:, None] + 1.0
    return np.maximum(-np.log(v / background.astype(np.float32)), 0.0).astype(np.float32)


def otsu3(values: np.ndarray, bins: int = 64) -> tuple[float, float]:
    """Two thresholds splitting ``values`` into three classes with the largest between-class variance."""
    v = np.asarray(values, np.float64).ravel()
    hi = float(np.percentile(v, 99.5)) if v.size else 1.0
    hi = hi if hi > 0 else 1.0
    hist, edges = np.histogram(np.clip(v, 0, hi), bins=bins, range=(0, hi))
    p = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w = np.cumsum(p)
    m = np.cumsum(p * centres)
    mt = m[-1]
    i, j = np.triu_indices(bins - 1, k=1)  # class 0 = bins [0, i], 1 = (i, j], 2 = (j, end]
    w0, w1, w2 = w[i], w[j] - w[i], 1.0 - w[j]
    ok = (w0 > 0) & (w1 > 0) & (w2 > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        m0, m1, m2 = m[i] / w0, (m[j] - m[i]) / w1, (mt - m[j]) / w2
        var = w0 * (m0 - mt) ** 2 + w1 * (m1 - mt) ** 2 + w2 * (m2 - mt) ** 2
    var = np.where(ok, var, -1.0)
    k = int(np.argmax(var))
    return float(edges[i[k] + 1]), float(edges[j[k] + 1])


def stain_layers(frame_rgb: np.ndarray) -> Layers:
    """The frame's OD and stain-residual layers with their thresholds (see the module docstring)."""
    table = od_table(frame_rgb)
    raw = optical_density(frame_rgb, table)
    od3 = cv2.GaussianBlur(raw, (0, 0), 1.0)
    od = cv2.transform(od3, _ONES)
    sub = every_other(od)  # thresholds and colours need no more
    t_cell, _ = otsu3(sub)
    inside = sub > t_cell
    cells = np.stack([c[inside] for c in cv2.split(every_other(od3))])  # 3 x N: fast medians
    u = _red_direction(cells)
    if cells.shape[1] >= 100:  # again from the half of the cells nearest that colour: a large white cell
        d = cells - np.outer(u, u @ cells)  # must not pull the red colour
        off = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        u = _red_direction(cells[:, off <= np.median(off)])
    # |od3 - (od3 . u) u|: the projection off the red direction, then its length, channel ops in OpenCV
    off_red = cv2.transform(od3, (np.eye(3, dtype=np.float32) - np.outer(u, u)).astype(np.float32))
    residual = cv2.sqrt(cv2.transform(cv2.multiply(off_red, off_red), _ONES))
    r_cells = every_other(residual)[inside]
    # the red cells' residual level and spread, from the lower part (white cells may be up to half)
    base, q3 = np.percentile(r_cells, [P_BASE, P_BASE + 20]) if r_cells.size else (0.0, 0.0)
    spread = max(q3 - base, _MIN_SPREAD)
    t_split = _otsu2(r_cells) if r_cells.size else 0.0
    t_stained = min(max(t_split, base + STAINED_K * spread), base + CAP_K * spread)
    return Layers(od=od, residual=residual, t_cell=t_cell, t_stained=float(t_stained), od_raw=raw,
                  od_table=table)


def _red_direction(od_pixels: np.ndarray) -> np.ndarray:
    """Unit OD colour of the red cells: the median OD vector of the given pixels (3 x N)."""
    u = np.median(od_pixels, axis=1) if od_pixels.shape[1] >= 50 else np.ones(3, np.float32)
    return (u / (np.linalg.norm(u) + 1e-6)).astype(np.float32)


def _otsu2(values: np.ndarray, bins: int = 64) -> float:
    """The two-class Otsu threshold of ``values``."""
    v = np.asarray(values, np.float64).ravel()
    hi = float(np.percentile(v, 99.9))
    hi = hi if hi > 0 else 1.0
    hist, edges = np.histogram(np.clip(v, 0, hi), bins=bins, range=(0, hi))
    p = hist / max(hist.sum(), 1)
    c = (edges[:-1] + edges[1:]) / 2
    w = np.cumsum(p)[:-1]
    m = np.cumsum(p * c)[:-1]
    mt = float((p * c).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (mt * w - m) ** 2 / (w * (1 - w))
    var = np.where((w > 0) & (w < 1), var, -1)
    return float(edges[int(np.argmax(var)) + 1])
