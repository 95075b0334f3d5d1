"""The red-cell ruler: how many pixels a red cell spans in a frame. Pure numpy + OpenCV.

Red cells are about 7.5 µm across in every blood smear, so their diameter in
pixels is the frame's magnification, whatever the microscope, camera or lab.

How (one frame):
1. The frame's stain layers (``stain.py``): optical density against its own
   background, so a pink CellaVision field and a cyan Olympus field look alike,
   and its background | cell threshold.
2. Each connected piece of the mask is filled (central pallor) and measured by
   the maximum of its distance transform: the radius of the largest disc inside
   it. That is a cell's radius for an isolated cell, a touching pair or a cell cut
   by the frame edge. Pieces that hold stained pixels (white cells) are skipped.
3. Pieces whose area is that of about one disc (0.55-1.8 x pi r^2) are single
   cells; the area-weighted median of their radii is the estimate. A crowded
   field where everything touches falls back to the peaks of the distance
   transform; too few cells gives ``None`` and the caller keeps its last value.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import math

import cv2
import numpy as np

from .stain import Layers, stain_layers

# A speck is not a cell: pieces smaller than this (px) are ignored.
_MIN_AREA = 30
_MIN_RADIUS = 2.0


@dataclass(frozen=True)
class ScaleEstimate:
    diameter_px: float | None  # red-cell diameter in this image's pixels; None: too few red cells
    cells: int  # how many red cells (or peaks) the estimate rests on


def _filled(mask: np.ndarray) -> np.ndarray:
    """Close small gaps, then fill every piece's holes (the pale centre of a red cell)."""
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 1, thickness=-1)
    return cv2.morphologyEx(out, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def _peak_radii(dt: np.ndarray) -> np.ndarray:
    """Radii at the distance transform's local maxima, one per disc (largest first, no overlap)."""
    peak = (dt == cv2.dilate(dt, np.ones((9, 9), np.uint8))) & (dt >= 3)
    ys, xs = np.nonzero(peak)
    r = dt[ys, xs]
    order = np.argsort(-r)
    chosen: list[tuple[int, int, float]] = []
    for x, y, rr in zip(xs[order], ys[order], r[order]):
        if all((x - cx) ** 2 + (y - cy) ** 2 > 0.5 * (rr + cr) ** 2 for cx, cy, cr in chosen):
            chosen.append((int(x), int(y), float(rr)))
    return np.array([c[2] for c in chosen])


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cw = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cw, cw[-1] / 2)])


def estimate_rbc_diameter(frame_rgb: np.ndarray, layers: Layers | None = None,
                          min_cells: int = 3, singles_only: bool = False) -> ScaleEstimate:
    """The typical red-cell diameter of one RGB frame, in its pixels (see the module docstring).

    Args:
        frame_rgb: HxWx3 uint8.
        layers: ``stain_layers(frame_rgb)`` if already computed (field mode shares it with detection).
        min_cells: fewer measurable red cells than this gives ``diameter_px=None``.
        singles_only: count only pieces shaped like one red cell (step 3), never the fallbacks: a crop's few
            red cells, cut off by its edge or touching the white cell, mislead them.
    """
    lay = layers if layers is not None else stain_layers(frame_rgb)
    mask = _filled((lay.od > lay.t_cell).astype(np.uint8))
    if mask.all():  # no background anywhere (a strip of a frame, one colour): nothing to measure a cell against
        return ScaleEstimate(None, 0)
    dt = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return ScaleEstimate(None, 0)
    radius = np.zeros(n, np.float32)
    np.maximum.at(radius, lab.ravel(), dt.ravel())
    stained = np.zeros(n, bool)  # pieces holding nucleus-coloured pixels: white cells, not red
    stained[np.unique(lab[lay.residual > lay.t_stained])] = True
    keep = np.arange(n) > 0
    keep &= (radius >= _MIN_RADIUS) & (stats[:, cv2.CC_STAT_AREA] >= _MIN_AREA) & ~stained
    radii = radius[keep].astype(np.float64)
    areas = stats[keep, cv2.CC_STAT_AREA].astype(np.float64)
    single = (areas >= 0.55 * np.pi * radii**2) & (areas <= 1.8 * np.pi * radii**2)
    if single.sum() >= min_cells:
        return ScaleEstimate(2.0 * _weighted_median(radii[single], areas[single]), int(single.sum()))
    if singles_only:
        return ScaleEstimate(None, int(single.sum()))
    peaks = _peak_radii(np.where(stained[lab], 0, dt))
    if len(peaks) >= min_cells:
        return ScaleEstimate(2.0 * float(np.median(peaks)), len(peaks))
    if len(radii) >= min_cells:
        return ScaleEstimate(2.0 * _weighted_median(radii, areas), len(radii))
    return ScaleEstimate(None, len(radii))


class ScaleSmoother:
    """The running scale of a stream: median of the last ``window`` good estimates.

    The magnification of a microscope changes only when someone turns the
    objective, so a median over a few seconds rejects one-frame mistakes
    (a crowded clump, a field of white cells) and still follows a real change.

    ``slide`` > 0 (a moving stage over one slide): the scale is the median of every
    good estimate since the magnification last changed (the last ``slide`` of them),
    not of the last ``window``: within one slide the magnification is fixed and the
    red cells are one patient's, so one slide has one scale, and a cell's views are
    all cropped alike however the local red cells look. A change is the median of the
    last ``window`` estimates more than ``change`` (25 %, the tracker's re-size
    threshold) away from it; the long history then restarts from those estimates.
    """

    def __init__(self, window: int = 15, slide: int = 0, change: float = 0.25):
        self.values: deque[float] = deque(maxlen=window)
        self.slide: deque[float] | None = deque(maxlen=slide) if slide > 0 else None
        self.change = change

    def update(self, estimate: ScaleEstimate) -> float | None:
        if estimate.diameter_px is not None:
            self.values.append(estimate.diameter_px)
            if self.slide is not None:
                self.slide.append(estimate.diameter_px)
                recent, whole = float(np.median(self.values)), float(np.median(self.slide))
                if len(self.values) == self.values.maxlen and abs(recent - whole) > self.change * whole:
                    self.slide = deque(self.values, maxlen=self.slide.maxlen)  # the objective was turned
        return self.current

    @property
    def current(self) -> float | None:
        values = self.slide if self.slide is not None else self.values
        return float(np.median(values)) if values else None


def crop_side(frame_rbc_px: float, model_rbc_px: float, input_px: int) -> int:
    """Side (frame px) of the square that shows red cells at the model's training scale.

    A square of side S resized to ``input_px`` shows a red cell of ``frame_rbc_px`` as
    ``frame_rbc_px * input_px / S`` px; setting that to ``model_rbc_px`` gives S.
    """
    return max(int(round(input_px * frame_rbc_px / model_rbc_px)), 8)


def images_rbc_px(images: np.ndarray, sample: int = 600, seed: int = 0, measure_px: int = 384) -> float | None:
    """The scale a set of training crops shows: median red-cell diameter (px) over a seeded sample.

    Crops often hold only one or two red cells beside the white cell, so each crop's
    estimate may rest on a single cell; the median over hundreds of crops is steady.
    Crops smaller than ``measure_px`` are measured upsampled (cubic, by a whole factor) to at
    least that size, where a crop's red cells (about a fifth of a white-cell crop) span 70 px
    or more, the regime the ruler works in on whole fields: on 96 px crops
    a red cell is ~18 px, measured from distance-transform maxima in whole pixels, so the
    estimates fall on a few levels (17.58, 18.0, 18.39 ...) and their median is 2.3 %
    low (PBC's 96 px crops: 17.58 px at 96 px, 18.0 px measured x4, and the ruler on
    PBC's whole 360 px fields reads 68.2 x 96 / 360 = 18.2 px).
    """
    if len(images) == 0:
        return None
    idx = np.random.default_rng(seed).permutation(len(images))[:sample]
    up = max(1, math.ceil(measure_px / min(images.shape[1:3])))
    values = []
    for i in idx:
        image = np.ascontiguousarray(images[i])
        if up > 1:
            image = cv2.resize(image, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        d = estimate_rbc_diameter(image, min_cells=1).diameter_px
        if d is not None:
            values.append(d / up)
    return round(float(np.median(values)), 2) if len(values) >= max(5, len(idx) // 10) else None
