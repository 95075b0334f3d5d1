"""How field mode reads a frame before it looks for cells, in one place: watch's field mode and site calibration
read every frame alike, so a site file's scale and stain distance are the ones watch then sees.

The lamp's uneven light is divided out (crops come from that frame), the share of the view clipped pure white
is measured, and the copy cells are searched in is made: half size when the long side is over
``field.SEARCH_SIDE``, smoothed when the camera is noisy (the noise measured on the whole frame), with its stain
layers. Pure: numpy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .field import shrink_for_search
from .illumination import flatten, overexposed
from .noise import noise_level, quieter
from .stain import Layers, stain_layers


@dataclass(frozen=True)
class FrameRead:
    """One frame as field mode reads it (see the module docstring)."""

    frame: np.ndarray  # the frame, its uneven light divided out: crops are cut from it
    uneven: float  # how far the light fell off across the view (illumination.flatten; 0: lit evenly)
    overexposed: float  # the share of the view pure white (illumination.overexposed; 0: under its threshold)
    view: np.ndarray  # the copy cells are searched in
    factor: int  # frame pixels per view pixel (1 or 2)
    noise: float  # the frame's pixel noise, grey levels (noise.noise_level)
    smoothed: float  # the noise level when the view was smoothed for it (0: not smoothed)
    layers: Layers  # the view's stain layers


def read_frame(frame_rgb: np.ndarray, uneven: float | None = None) -> FrameRead:
    """Read ``frame_rgb`` (RGB uint8) as field mode does. ``uneven``: the caller divided out the uneven light
    already (how far it fell off); None: done here."""
    frame = frame_rgb
    if uneven is None:  # a lamp that lights one side more: divided out before anything is read
        frame, uneven = flatten(frame_rgb)
    clipped = overexposed(frame)
    view, factor = shrink_for_search(frame)
    level = noise_level(frame)
    view, smoothed = quieter(view, level, factor)  # a noisy camera: cells read from a smoothed copy
    return FrameRead(frame, uneven, clipped, view, factor, level, smoothed, stain_layers(view))
