"""Pure pre-processing derived from the sidecar: crop and resize RGB uint8."""
from __future__ import annotations

import cv2
import numpy as np

from .bundle import InputSpec

_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an HxWxC image (a view, no copy)."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return image[y : y + s, x : x + s]


def prepare(image_rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """RGB uint8 HxWx3 -> uint8 array of the model's input size (no batch axis)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image_rgb.dtype} {image_rgb.shape}")
    img = center_square(image_rgb) if spec.crop == "center" else image_rgb
    if img.shape[:2] != (spec.height, spec.width):
        interp = _INTERP.get(spec.interpolation, cv2.INTER_AREA)
        if img.shape[0] < spec.height:  # upscaling: area is undefined, use bilinear
            interp = cv2.INTER_LINEAR
        img = cv2.resize(img, (spec.width, spec.height), interpolation=interp)
    return np.ascontiguousarray(img)


def too_small(image_rgb: np.ndarray, spec: InputSpec, factor: int = 4) -> bool:
    """True when the image is more than ``factor`` times smaller than the model's input on a side:
    upscaled that far it holds too little of a cell for the class to mean anything."""
    return min(image_rgb.shape[:2]) * factor < min(spec.height, spec.width)
