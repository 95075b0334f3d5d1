"""Field mode: find the stained cells in a whole microscope field, no second network needed.

White cells and platelets are found by colour relative to the frame itself
(``stain.py``): pixels whose optical-density colour lies off the red cells'
colour and above their spread, whatever the lab's stain, background or camera.
The stained pixels are closed so that the lobes of one nucleus merge, and each
connected piece is one white cell or platelet. Every size is a fraction of the
frame's red-cell diameter (``scale.py``), so the same settings hold at any
magnification; each cell is cropped as a square that shows red cells at the
model's training scale. Pure numpy + OpenCV.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .scale import crop_side, estimate_rbc_diameter
from .stain import Layers, stain_layers

# When a model's sidecar does not say its scale: PBC's 96 px crops show a red cell about
# 18 px across (measured by scale.images_rbc_px).
DEFAULT_MODEL_RBC_PX = 18.0
# When a frame has too few red cells and nothing better is known: a red cell in a
# CellaVision DM96 field (PBC), px; with the shipped model that is a 360 px crop.
FALLBACK_RBC_PX = 67.5
# Frames with a longer side than this are searched at half size (1920x1080 -> 960x540).
SEARCH_SIDE = 1280
# No frame, image or crop side is taken above this (sources refuses larger files, site calibration and --crop-size
# larger sides): per-frame work must stay bounded, SIGTERM is honoured between frames.
MAX_SIDE = 4096


def model_rbc_px(spec) -> float:
    """The red-cell diameter a model was trained at, in its input's pixels: its sidecar's ``rbc_px``
    (``bundle.InputSpec``), or ``DEFAULT_MODEL_RBC_PX`` for a model whose sidecar predates it."""
    return spec.rbc_px or DEFAULT_MODEL_RBC_PX


@dataclass(frozen=True)
class Detection:
    x: float  # centre, pixels
    y: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the stained region
    area: int
    kind: str = "white"  # "white": white-cell sized; "small": platelet sized


@dataclass(frozen=True)
class FieldConfig:
    """Detector settings. Sizes are fractions of the frame's red-cell diameter.

    ``crop_size`` fixes the square cropped around each cell (frame px); ``None``
    (auto) derives it from each frame's red cells and ``model_rbc_px``.
    """

    crop_size: int | None = None
    model_rbc_px: float = DEFAULT_MODEL_RBC_PX  # red-cell diameter in the model's input (sidecar)
    input_px: int = 96  # the model's input side
    merge: float = 0.15  # lobes closer than this (x red-cell diameter) are one cell
    min_area: float = 0.04  # pieces smaller than this (x a red cell's area) are specks
    white_area: float = 0.4  # stained area above this (x a red cell's area): white-cell sized

    def rbc_px_for_crop(self) -> float | None:
        """The frame's red-cell diameter implied by a fixed crop size (None in auto mode)."""
        return None if self.crop_size is None else self.crop_size * self.model_rbc_px / self.input_px

    def cut_scale(self) -> float | None:
        """The scale the crops are cut at, whatever size they are saved at: a red cell's diameter over the
        crop's side (``model_rbc_px`` over ``input_px``); None with a fixed ``crop_size``, which follows no
        ruler (a session records it, ``celledge export`` passes it on to ``celltrain fit``)."""
        return None if self.crop_size is not None else round(self.model_rbc_px / self.input_px, 5)

    def crop_for(self, rbc_px: float) -> int:
        """Crop side (frame px) that shows a red cell of ``rbc_px`` at the model's scale."""
        if self.crop_size is not None:
            return self.crop_size
        return crop_side(rbc_px, self.model_rbc_px, self.input_px)


def stained_mask(layers: Layers) -> np.ndarray:
    """Nucleus / platelet / granule pixels (uint8 0/1)."""
    return (layers.residual > layers.t_stained).astype(np.uint8)


def detect(frame_rgb: np.ndarray, rbc_px: float | None = None, layers: Layers | None = None,
           cfg: FieldConfig = FieldConfig()) -> list[Detection]:
    """Stained cells in a field, largest first.

    Args:
        frame_rgb: HxWx3 uint8.
        rbc_px: the frame's red-cell diameter in px (``scale.py``, or implied by a fixed crop size);
            None: measured on this frame, ``FALLBACK_RBC_PX`` when it has too few red cells.
        layers: ``stain_layers(frame_rgb)`` if already computed.
    """
    layers = layers if layers is not None else stain_layers(frame_rgb)
    if rbc_px is None:
        rbc_px = estimate_rbc_diameter(frame_rgb, layers).diameter_px or FALLBACK_RBC_PX
    mask = cv2.morphologyEx(stained_mask(layers), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))  # drop speckle
    r = max(int(round(cfg.merge * rbc_px)), 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    rbc_area = np.pi * (rbc_px / 2) ** 2
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= cfg.min_area * rbc_area:
            kind = "white" if area >= cfg.white_area * rbc_area else "small"
            out.append(Detection(float(centroids[i][0]), float(centroids[i][1]), (x, y, x + w, y + h), area, kind))
    return sorted(out, key=lambda d: -d.area)


def scaled(det: Detection, factor: int) -> Detection:
    """A detection found on a frame shrunk by ``factor``, in the full frame's pixels."""
    x0, y0, x1, y1 = det.box
    return Detection(det.x * factor, det.y * factor, (x0 * factor, y0 * factor, x1 * factor, y1 * factor),
                     det.area * factor * factor, det.kind)


def shrink_for_search(frame_rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """The frame to search for cells, and its shrink factor: half size when the long side is over
    ``SEARCH_SIDE`` (cells stay tens of px across, and the stain layers cost a quarter); crops are
    still taken from the full frame."""
    h, w = frame_rgb.shape[:2]
    if max(h, w) <= SEARCH_SIDE:
        return frame_rgb, 1
    return cv2.resize(frame_rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA), 2


def crop_box(det: Detection, size: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (frame px, may lie outside it) of the ``size`` square ``crop`` takes."""
    half = size // 2
    x, y = int(round(det.x)), int(round(det.y))
    return x - half, y - half, x - half + size, y - half + size


def crop_at(frame_rgb: np.ndarray, box) -> np.ndarray:
    """The region ``box`` (x0, y0, x1, y1, frame px; it may run past the frame) with the borders reflected
    at the frame edge. Inside the frame it is a view of the frame: copy it to keep it past the frame."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = frame_rgb.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return frame_rgb[y0:y1, x0:x1]
    pad = max(-x0, -y0, x1 - w, y1 - h, 0)
    padded = cv2.copyMakeBorder(frame_rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    return padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad]


def crop(frame_rgb: np.ndarray, det: Detection, size: int) -> np.ndarray:
    """A ``size`` x ``size`` square centred on the detection; borders reflected at the frame edge."""
    return crop_at(frame_rgb, crop_box(det, size))


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
