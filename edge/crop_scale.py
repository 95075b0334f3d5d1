"""Single-cell images framed unlike the training crops: cut to the model's training scale. Pure numpy + OpenCV.

A crop from another collection may frame its cell tighter or wider than the crops the model learnt
from (PBC's: a red cell about 18 px across a 96 px crop, the white cell about a third of it), and a
model sees a cell framed 1.5x off as another cell: at three red cells across, the shipped model gets
41 % of PBC's own fields right, at eight 54 %, at 5.3 (its training framing) 95 %
(``benchmarks/results/classify-rescale.json``). What ``celledge classify`` does with each image:

1. An image no larger than ``AS_GIVEN`` x the model's input is taken as cut for the model (the
   daemon's own saved crops, a 96 px collection): classified as given.
2. The white cell at the centre (the largest stained piece near it, if it could be one cell) fills the image
   (the framing its size implies is below ``TIGHT`` red cells across; white cells are about
   ``WHITE_TO_RED`` red cells across): the red cells are cut off, so the white cell's size sets the scale.
3. Else its red cells (at least ``MIN_RED_CELLS`` pieces shaped like one red cell, measured at
   ``MEASURE_PX`` or more, at least ``MIN_RBC_PX`` across in the image: smaller ones are an eosinophil's
   granules or specks): when the framing they imply is more than ``BAND`` off the training
   framing, the centred square at the training scale is cut (borders reflected).
4. Else as given.

What is measured is the centred square (what the model is shown), shrunk to ``field.SEARCH_SIDE`` when
larger; an image without colour is left as given; a square wider than the image is at most ``MAX_WIDEN``
times its side and is built at twice the model's input, so a large file costs about what a 1280 px one does.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .field import SEARCH_SIDE, crop_at, detect
from .scale import ScaleEstimate, crop_side, estimate_rbc_diameter
from .preprocess import center_square
from .stain import is_greyscale, stain_layers

AS_GIVEN = 1.25
BAND = 1.25
TIGHT = 3.2
WHITE_TO_RED = 1.57  # median white-cell / red-cell diameter on PBC's 160 fields (probe 19-1)
MIN_RED_CELLS = 4
MIN_RBC_PX = 10.0  # a smaller red-cell reading (image px) is granules or specks: no useful camera shows cells so small
MEASURE_PX = 384
MAX_WIDEN = 3.5  # a square at most this x the image's side (1.6 red cells across -> 5.33 is 3.3x)
SAMPLE = 15  # --rescale shared: images measured for the one framing; crop mode: readings kept
WHITE_MAX_SHARE = 0.8  # a "white cell" covering more of the image is not one cell (at 1.6 red cells across one covers ~75 %)


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
    """Equivalent diameter (px) of the largest stained piece whose centre lies within a quarter of the square
    image's side from its centre, unless it covers more than ``WHITE_MAX_SHARE`` of the image (noise or a
    texture merges into one piece as large as the image)."""
    side = image.shape[0]
    near = [d for d in detect(image, rbc_px or side / 3.0, layers)
            if max(abs(d.x - side / 2), abs(d.y - side / 2)) <= side / 4]
    if not near or near[0].area > WHITE_MAX_SHARE * side * side:  # detect lists the largest first
        return None
    return 2.0 * math.sqrt(near[0].area / math.pi)


def taken_as_cut(image_rgb: np.ndarray, input_px: int) -> bool:
    """An image no larger than ``AS_GIVEN`` x the model's input: taken as cut for the model, never reframed."""
    return min(image_rgb.shape[:2]) <= AS_GIVEN * input_px


def measure(image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> CropScale:
    """How ``image_rgb`` (one cell, centred) should be framed for a model trained at ``model_rbc_px`` red-cell
    px in an ``input_px`` input (see the module docstring). What is measured is the centred square, the part
    the model is shown."""
    square = center_square(image_rgb)
    side = square.shape[0]
    if taken_as_cut(square, input_px) or is_greyscale(square):
        return CropScale("as given", None, side)
    if side < MEASURE_PX:  # small crops measured upsampled by a whole factor (scale.images_rbc_px)
        up = float(math.ceil(MEASURE_PX / side))
        view = cv2.resize(square, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
    elif side > SEARCH_SIDE:  # large images measured at SEARCH_SIDE px (as field mode searches)
        up = SEARCH_SIDE / side
        view = cv2.resize(square, (SEARCH_SIDE, SEARCH_SIDE), interpolation=cv2.INTER_AREA)
    else:
        up, view = 1.0, np.ascontiguousarray(square)
    layers = stain_layers(view)
    est = estimate_rbc_diameter(view, layers, min_cells=1, singles_only=True)
    if est.diameter_px is not None and est.diameter_px / up < MIN_RBC_PX:  # an eosinophil's granules, specks
        est = ScaleEstimate(None, est.cells)
    white = _white_diameter(view, layers, est.diameter_px)
    if white is not None and side * WHITE_TO_RED / (white / up) < TIGHT:
        source, rbc = "white cell", white / up / WHITE_TO_RED
    elif est.diameter_px is not None and est.cells >= MIN_RED_CELLS:
        source, rbc = "red cells", est.diameter_px / up
        if 1 / BAND <= side / rbc / (input_px / model_rbc_px) <= BAND:  # the framing is right
            return CropScale("as given", rbc, side)
    else:
        return CropScale("as given", None, side)
    return CropScale(source, rbc, min(crop_side(rbc, model_rbc_px, input_px), int(MAX_WIDEN * side)))


def rescale(image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> tuple[np.ndarray, CropScale]:
    """``image_rgb`` framed as the model's training crops (``measure``): the centred square of the measured
    side, borders reflected; the image itself when it is left as given. A square wider than the image is
    built at most ``2 x input_px`` px across (the model sees it at ``input_px``), so a widened large image
    costs what a small one does."""
    found = measure(image_rgb, model_rbc_px, input_px)
    if found.source == "as given":
        return image_rgb, found
    return _centred(image_rgb, found.side, input_px), found


def _centred(image_rgb: np.ndarray, side: int, input_px: int) -> np.ndarray:
    """The centred ``side`` square of the image, borders reflected; when it is wider than the image, built at
    most ``2 x input_px`` across."""
    h, w = image_rgb.shape[:2]
    if side > min(h, w) and side > 2 * input_px:
        f = 2 * input_px / side
        image_rgb = cv2.resize(image_rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        h, w, side = image_rgb.shape[0], image_rgb.shape[1], 2 * input_px
    x0, y0 = w // 2 - side // 2, h // 2 - side // 2
    return np.ascontiguousarray(crop_at(image_rgb, (x0, y0, x0 + side, y0 + side)))


def zoom_of(image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> float | None:
    """The zoom ``measure`` asks of the image (side to classify over its side; 1 when its red cells say the
    framing is right), or None when it has no reading (nothing to measure, taken as cut, no colour)."""
    found = measure(image_rgb, model_rbc_px, input_px)
    return None if found.rbc_px is None else found.side / min(image_rgb.shape[:2])


def median_zoom(zooms) -> float:
    """One framing from many readings: their median (1.0, as given, when there are none)."""
    return float(np.median(zooms)) if len(zooms) else 1.0


def shared_zoom(images: Iterable[np.ndarray], model_rbc_px: float, input_px: int) -> tuple[float, list[float]]:
    """One framing for images of one collection (cut alike by one lab's pipeline): the median zoom of those
    with a reading (``zoom_of``; 1.0 when none), and their zooms."""
    zooms = [z for z in (zoom_of(image, model_rbc_px, input_px) for image in images) if z is not None]
    return median_zoom(zooms), zooms


def framings_differ(zooms: list[float], zoom: float) -> bool:
    """A third or more of the readings lie more than ``BAND`` from their median: not one framing."""
    off = sum(not 1 / BAND <= z / zoom <= BAND for z in zooms)
    return len(zooms) > 0 and off * 3 >= len(zooms)


def at_zoom(image_rgb: np.ndarray, zoom: float, readings: int, input_px: int, source: str) -> tuple[np.ndarray, dict]:
    """One framing for many images (``--rescale shared``, crop mode's stream): the centred square ``zoom`` x the
    image's side (borders reflected, ``_centred``) and the JSON line's ``scale`` (``source``, or "as given" when
    the image is left as it is: taken as cut, or the square is its own)."""
    side = min(image_rgb.shape[:2])
    crop = side if taken_as_cut(image_rgb, input_px) else max(int(round(zoom * side)), 8)
    view = image_rgb if crop == side else _centred(image_rgb, crop, input_px)
    return view, {"source": source if crop != side else "as given", "crop": crop, "readings": readings}


def at_fraction(image_rgb: np.ndarray, fraction: float, model_rbc_px: float, input_px: int) -> tuple[np.ndarray, dict]:
    """A crop whose red cells span ``fraction`` of its side, as ``celledge export`` records it: framed as the
    training crops from that record, not measured again (the ruler re-cut 6 of 77 exported crops, already at the
    training scale, to 194-464 px), and the JSON line's ``scale``."""
    side = min(image_rgb.shape[:2])
    crop = max(int(round(side * fraction * input_px / model_rbc_px)), 8)
    if abs(crop - side) <= AS_RECORDED * side:
        crop = side
    view = image_rgb if crop == side else _centred(image_rgb, crop, input_px)
    return view, {"source": "export.json", "rbc_px": round(fraction * side, 1), "crop": crop}


AS_RECORDED = 0.05  # a recorded framing this close to the model's is taken as it is


class StreamFraming:
    """Crop mode's framing: views of one microscope one after another, so one framing for the stream.

    Each measured view with a reading (its red cells, or a white cell filling it) votes for the zoom it asks
    for (the side to classify over the view's side, 1 when its red cells say the framing is right); a view
    with nothing to measure does not vote. The stream uses the median of the last ``window`` votes (as given
    before any). Views are measured until ``first`` votes are in (at most the first ``WARM_UP`` views),
    then every ``every``-th (measuring a 640x480 view costs 5-40 ms, a frame of crop mode 1-2 ms; a
    stream's framing changes only when someone turns the objective).
    """

    WARM_UP = 50

    def __init__(self, model_rbc_px: float, input_px: int, window: int = SAMPLE, first: int = 5, every: int = 25):
        self.model_rbc_px, self.input_px, self.first, self.every = model_rbc_px, input_px, first, every
        self.zooms: deque[float] = deque(maxlen=window)
        self.frames = 0

    def view(self, image_rgb: np.ndarray) -> tuple[np.ndarray, dict]:
        """What crop mode classifies of this view, and the JSON line's ``scale``."""
        self.frames += 1
        if taken_as_cut(image_rgb, self.input_px):  # a crop already cut for the model: never reframed
            return at_zoom(image_rgb, 1.0, len(self.zooms), self.input_px, "stream")
        if (len(self.zooms) < self.first and self.frames <= self.WARM_UP) or self.frames % self.every == 0:
            zoom = zoom_of(image_rgb, self.model_rbc_px, self.input_px)
            if zoom is not None:
                self.zooms.append(zoom)
        return at_zoom(image_rgb, median_zoom(self.zooms), len(self.zooms), self.input_px, "stream")
