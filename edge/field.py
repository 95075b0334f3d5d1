"""Field mode: find the stained cells in a whole microscope field, no second network needed.

May-Grünwald-Giemsa stains nuclei, granules and platelets purple: blue well
above green. Red cells and plasma are pink or pale, with blue close to green.
So the purple mask ``B - G > threshold``, closed so that the lobes of one
nucleus merge, gives one connected component per white cell or platelet.
Each is cropped (a square of ``crop_size`` px around it, as the training crops
were framed) for the classifier. Pure numpy + OpenCV.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Detection:
    x: float  # centre, pixels
    y: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the purple region
    area: int


@dataclass(frozen=True)
class FieldConfig:
    crop_size: int = 96  # side of the square cropped around each cell (the training crops' framing)
    purple_threshold: int = 35  # B - G above the frame's median, grey levels
    min_area: int = 12  # px at crop_size 96; scaled with (crop_size / 96)^2
    merge_radius: float = 6.0  # px at crop_size 96: lobes closer than this are one cell

    def scaled(self, value: float, power: int = 1) -> float:
        return value * (self.crop_size / 96.0) ** power


def purple_mask(frame_rgb: np.ndarray, threshold: int) -> np.ndarray:
    """Stained pixels: B - G above the frame's median B - G by ``threshold`` (robust to a colour
    cast), or darker than half the frame's median brightness (pyknotic, near-black nuclei)."""
    b = frame_rgb[..., 2].astype(np.int16)
    g = frame_rgb[..., 1].astype(np.int16)
    d = b - g
    grey = frame_rgb.mean(axis=2)
    purple = d > np.median(d[::4, ::4]) + threshold
    dark = grey < 0.45 * np.median(grey[::4, ::4])
    return (purple | dark).astype(np.uint8)


def detect(frame_rgb: np.ndarray, cfg: FieldConfig = FieldConfig()) -> list[Detection]:
    """Stained cells in a field, largest first."""
    mask = purple_mask(frame_rgb, cfg.purple_threshold)
    r = max(int(round(cfg.scaled(cfg.merge_radius))), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))  # drop speckle
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = cfg.scaled(cfg.min_area, 2)
    out = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area >= min_area:
            out.append(Detection(float(centroids[i][0]), float(centroids[i][1]), (int(x), int(y), int(x + w), int(y + h)),
                                 int(area)))
    return sorted(out, key=lambda d: -d.area)


def crop(frame_rgb: np.ndarray, det: Detection, size: int) -> np.ndarray:
    """A ``size`` x ``size`` square centred on the detection; borders reflected at the frame edge."""
    half = size // 2
    padded = cv2.copyMakeBorder(frame_rgb, half, half, half, half, cv2.BORDER_REFLECT)
    x, y = int(round(det.x)) + half, int(round(det.y)) + half
    return padded[y - half : y - half + size, x - half : x - half + size]


def match(dets: list[Detection], truth_centres: list[tuple[float, float]], radius: float) -> dict:
    """Greedy one-to-one matching of detections to true centres: recall, precision."""
    used: set[int] = set()
    tp = 0
    for tx, ty in truth_centres:
        best, best_d = None, radius
        for i, d in enumerate(dets):
            dist = float(np.hypot(d.x - tx, d.y - ty))
            if i not in used and dist <= best_d:
                best, best_d = i, dist
        if best is not None:
            used.add(best)
            tp += 1
    return {"true_positives": tp, "recall": tp / max(len(truth_centres), 1), "precision": tp / max(len(dets), 1),
            "detections": len(dets), "truth": len(truth_centres)}
