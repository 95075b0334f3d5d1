"""Pixel noise: how much a frame has, and a quieter copy of a noisy frame to read cells from. Pure numpy + OpenCV.

Field mode finds red cells, white cells and the red-cell ruler from thresholds on each frame's optical
density, smoothed by one pixel. A camera at high gain (little light, a short exposure) gives frames whose
pixels scatter by tens of levels: the red cells' mask breaks into fragments, the ruler reads them as tiny
cells and every crop is cut far too small. The noise is read from the differences of neighbouring pixels
(their median: edges are few); only a frame noisier than ``NOISY`` is smoothed, with a Gaussian that grows
with the noise, for reading; the crops the model classifies are cut from the frame itself.
"""
from __future__ import annotations

import cv2
import numpy as np

NOISY = 6.0  # grey levels: clean camera frames and JPEGs read 0-2.1 (PBC, DeepBioNet)
SIGMA_PER_LEVEL = 1 / 12  # Gaussian sigma (px) per grey level of noise
MAX_SIGMA = 4.0


def noise_level(frame_rgb: np.ndarray) -> float:
    """The frame's pixel noise in grey levels (a Gaussian's sigma): the median absolute difference of
    horizontally neighbouring pixels over every fourth row, / (0.6745 sqrt 2)."""
    rows = np.ascontiguousarray(frame_rgb[::4])
    if rows.shape[0] == 0 or rows.shape[1] < 2:  # no neighbours to compare (a frame one pixel wide): no noise read
        return 0.0
    grey = cv2.cvtColor(rows, cv2.COLOR_RGB2GRAY).astype(np.int16)
    return float(np.median(np.abs(np.diff(grey, axis=1))) / (0.6745 * np.sqrt(2.0)))


def quieter(frame_rgb: np.ndarray, level: float | None = None, factor: int = 1) -> tuple[np.ndarray, float]:
    """The frame to read cells from, and the noise level when it was smoothed (0: the frame itself).

    ``level``/``factor``: ``frame_rgb`` is a copy shrunk by ``factor`` of a frame whose noise is ``level``
    (measured at full size: shrinking averages noise away); the smoothing is sized for the copy's pixels.
    """
    level = noise_level(frame_rgb) if level is None else level
    if level <= NOISY:
        return frame_rgb, 0.0
    sigma = min(level * SIGMA_PER_LEVEL / factor, MAX_SIGMA)
    return cv2.GaussianBlur(frame_rgb, (0, 0), sigma), round(level, 1)
