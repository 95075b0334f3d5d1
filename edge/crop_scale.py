"""Single-cell images framed unlike the training crops: cut to the model's training scale. Pure numpy + OpenCV.

A crop from another collection may frame its cell tighter or wider than the crops the model learnt
from (PBC's: a red cell about 18 px across a 96 px crop, the white cell about a third of it), and a
model sees a cell framed 1.5x off as another cell: at three red cells across, the shipped model gets
41 % of PBC's own fields right, at eight 54 %, at 5.3 (its training framing) 95 %
(``benchmarks/results/classify-rescale.json``). What ``celledge classify`` does with each image:

1. An image no larger than ``AS_GIVEN`` x the model's input is taken as cut for the model (the
   daemon's own saved crops, a 96 px collection): classified as given.
2. The white cell nearest the centre fills the image (the framing its size implies is below
   ``TIGHT`` red cells across; white cells are about ``WHITE_TO_RED`` red cells across): the red cells
   are cut off, so the white cell's size sets the scale.
3. Else its red cells (at least ``MIN_RED_CELLS`` pieces shaped like one red cell, measured at
   ``MEASURE_PX`` or more): when the framing they imply is more than ``BAND`` off the training
   framing, the centred square at the training scale is cut (borders reflected).
4. Else as given.

Images longer than ``field.SEARCH_SIDE`` are measured shrunk to it (a 20-megapixel file costs what a
1280 px one does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .field import SEARCH_SIDE, crop_at, detect
from .scale import crop_side, estimate_rbc_diameter
from .stain import stain_layers

AS_GIVEN = 1.25
BAND = 1.25
TIGHT = 3.2
WHITE_TO_RED = 1.57  # median white-cell / red-cell diameter on PBC's 160 fields (probe 19-1)
MIN_RED_CELLS = 4
MEASURE_PX = 384


@dataclass(frozen=True)
class CropScale:
    source: str  # "red cells", "white cell" or "as given"
    rbc_px: float | None  # red-cell diameter in the image's px: measured, implied by the white cell, or None
    side: int  # side (image px) of the centred square that is classified

    def record(self) -> dict:
        """The JSON line's ``scale``, as field mode writes it."""
        return {"source": self.source, "rbc_px": None if self.rbc_px is None else round(self.rbc_px, 1),
                "crop": self.side}


def _white_diameter(image: np.ndarray, layers, rbc_px: float | None) -> float | None:
    """Equivalent diameter (px) of the stained piece nearest the image's centre."""
    h, w = image.shape[:2]
    dets = detect(image, rbc_px or min(h, w) / 3.0, layers)
    if not dets:
        return None
    d = min(dets, key=lambda d: (d.x - w / 2) ** 2 + (d.y - h / 2) ** 2)
    return 2.0 * math.sqrt(d.area / math.pi)


def measure(image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> CropScale:
    """How ``image_rgb`` (one cell, centred) should be framed for a model trained at ``model_rbc_px`` red-cell
    px in an ``input_px`` input (see the module docstring)."""
    h, w = image_rgb.shape[:2]
    side = min(h, w)
    if side <= AS_GIVEN * input_px:
        return CropScale("as given", None, side)
    if side < MEASURE_PX:  # small crops measured upsampled by a whole factor (scale.images_rbc_px)
        up = float(math.ceil(MEASURE_PX / side))
        view = cv2.resize(image_rgb, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
    elif max(h, w) > SEARCH_SIDE:  # large images measured at most SEARCH_SIDE px long (as field mode searches)
        up = SEARCH_SIDE / max(h, w)
        view = cv2.resize(image_rgb, (max(1, round(w * up)), max(1, round(h * up))), interpolation=cv2.INTER_AREA)
    else:
        up, view = 1.0, image_rgb
    layers = stain_layers(view)
    est = estimate_rbc_diameter(view, layers, min_cells=1, singles_only=True)
    white = _white_diameter(view, layers, est.diameter_px)
    if white is not None and side * WHITE_TO_RED / (white / up) < TIGHT:
        rbc = white / up / WHITE_TO_RED
        return CropScale("white cell", rbc, crop_side(rbc, model_rbc_px, input_px))
    if est.diameter_px is not None and est.cells >= MIN_RED_CELLS:
        rbc = est.diameter_px / up
        framing = side / rbc / (input_px / model_rbc_px)
        if not 1 / BAND <= framing <= BAND:
            return CropScale("red cells", rbc, crop_side(rbc, model_rbc_px, input_px))
        return CropScale("as given", rbc, side)
    return CropScale("as given", None, side)


def rescale(image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> tuple[np.ndarray, CropScale]:
    """``image_rgb`` framed as the model's training crops (``measure``): the centred square of the measured
    side, borders reflected; the image itself when it is left as given."""
    found = measure(image_rgb, model_rbc_px, input_px)
    if found.source == "as given":
        return image_rgb, found
    h, w = image_rgb.shape[:2]
    x0, y0 = w // 2 - found.side // 2, h // 2 - found.side // 2
    return np.ascontiguousarray(crop_at(image_rgb, (x0, y0, x0 + found.side, y0 + found.side))), found
