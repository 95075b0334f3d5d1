"""A deterministic suite of field corruptions for robustness benchmarks.

What a microscope, a stain and a camera do to an image: defocus and motion blur,
sensor noise, compression, exposure, contrast, colour, stain (HED) shifts,
uneven illumination, bubbles, debris and small changes of scale, each at
severities 1 (mild) to 5 (harsh). Every function is seeded: the same image,
corruption, severity and seed always give the same pixels.

Pure numpy + OpenCV, uint8 RGB in and out.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)

# Ruifrok & Johnston stain vectors (haematoxylin, eosin, DAB) in optical density.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _scale(img: np.ndarray) -> float:
    return img.shape[0] / 96.0  # corruption sizes are defined for 96 px crops


def defocus_blur(img, s, rng):
    r = (1.0, 1.5, 2.0, 2.6, 3.3)[s - 1] * _scale(img)
    k = int(np.ceil(r)) * 2 + 1
    yy, xx = np.mgrid[:k, :k] - k // 2
    disk = ((xx**2 + yy**2) <= r * r).astype(np.float32)
    return _u8(cv2.filter2D(img.astype(np.float32), -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT))


def motion_blur(img, s, rng):
    length = max(int(round((3, 5, 7, 9, 12)[s - 1] * _scale(img))), 1)  # 16 px crops: 0 at severity 1
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    return _u8(cv2.filter2D(img.astype(np.float32), -1, k / max(k.sum(), 1e-6), borderType=cv2.BORDER_REFLECT))


def gaussian_noise(img, s, rng):
    return _u8(img + rng.normal(0, (6, 10, 15, 21, 28)[s - 1], img.shape))


def shot_noise(img, s, rng):
    photons = (120, 60, 30, 16, 9)[s - 1]
    return _u8(rng.poisson(img / 255.0 * photons) / photons * 255.0)


def jpeg(img, s, rng):
    q = (40, 25, 15, 10, 6)[s - 1]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def pixelate(img, s, rng):
    f = (0.7, 0.55, 0.42, 0.33, 0.25)[s - 1]
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(int(w * f), 1), max(int(h * f), 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def brightness_up(img, s, rng):
    return _u8(img.astype(np.float32) + (20, 35, 50, 65, 80)[s - 1])


def brightness_down(img, s, rng):
    return _u8(img * (0.85, 0.72, 0.6, 0.48, 0.38)[s - 1])


def contrast_up(img, s, rng):
    c = (1.3, 1.6, 1.9, 2.3, 2.8)[s - 1]
    m = img.mean(axis=(0, 1), keepdims=True)
    return _u8((img - m) * c + m)


def contrast_down(img, s, rng):
    c = (0.75, 0.6, 0.45, 0.33, 0.22)[s - 1]
    m = img.mean(axis=(0, 1), keepdims=True)
    return _u8((img - m) * c + m)


def saturate(img, s, rng):
    f = (1.5, 1.9, 2.4, 3.0, 3.8)[s - 1]
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * f, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def stain(img, s, rng):
    """Shift haematoxylin and eosin amounts (another lab's stain protocol)."""
    amount = (0.12, 0.22, 0.32, 0.42, 0.55)[s - 1]
    od = -np.log((img.astype(np.float64) + 1.0) / 256.0)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = 1.0 + rng.uniform(-amount, amount, 3) * np.array([1.0, 1.0, 0.0])  # H and E only
    beta = rng.uniform(-amount, amount, 3) * np.array([0.15, 0.15, 0.0])
    hed = hed * alpha + beta
    rgb = 256.0 * np.exp(-(hed @ _RGB_FROM_HED)) - 1.0
    return _u8(rgb.reshape(img.shape))


def vignette(img, s, rng):
    """Uneven illumination: a brightness gradient plus dark corners."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    d = np.sqrt(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2)
    strength = (0.25, 0.4, 0.55, 0.7, 0.85)[s - 1]
    gain = 1.0 - strength * np.clip(d / 0.9, 0, 1) ** 1.5
    return _u8(img * gain[..., None])


def bubbles(img, s, rng):
    """Air bubbles under the cover slip: bright discs with dark rims."""
    out = img.astype(np.float32)
    sc = _scale(img)
    for _ in range((1, 2, 3, 4, 6)[s - 1]):
        layer = np.zeros(img.shape[:2], np.float32)
        rim = np.zeros(img.shape[:2], np.float32)
        c = (int(rng.uniform(0, img.shape[1])), int(rng.uniform(0, img.shape[0])))
        r = int(rng.uniform(6, 18) * sc)
        cv2.circle(layer, c, r, 1.0, -1, cv2.LINE_AA)
        cv2.circle(rim, c, r, 1.0, max(int(2 * sc), 1), cv2.LINE_AA)
        out = out * (1 - 0.35 * layer[..., None]) + 255 * 0.35 * layer[..., None]
        out = out * (1 - 0.6 * rim[..., None]) + 60 * 0.6 * rim[..., None]
    return _u8(out)


def debris(img, s, rng):
    """Dust, stain precipitate and fibres."""
    out = img.copy()
    sc = _scale(img)
    h, w = img.shape[:2]
    for _ in range((4, 8, 14, 22, 32)[s - 1]):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        col = tuple(int(v) for v in rng.uniform(20, 90, 3))
        if rng.random() < 0.2:
            end = (int(c[0] + rng.normal(0, 20 * sc)), int(c[1] + rng.normal(0, 20 * sc)))
            cv2.line(out, c, end, col, 1, cv2.LINE_AA)
        else:
            cv2.circle(out, c, max(int(rng.uniform(0.5, 2.5) * sc), 1), col, -1, cv2.LINE_AA)
    return out


def scale_change(img, s, rng):
    """Another magnification: zoom in or out by a few percent, reflected borders."""
    f = 1.0 + rng.choice([-1, 1]) * (0.06, 0.1, 0.15, 0.2, 0.26)[s - 1]
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, f)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


CORRUPTIONS: dict[str, Callable] = {
    f.__name__: f
    for f in (defocus_blur, motion_blur, gaussian_noise, shot_noise, jpeg, pixelate, brightness_up,
              brightness_down, contrast_up, contrast_down, saturate, stain, vignette, bubbles, debris,
              scale_change)
}


def corrupt(img: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """One corruption of one uint8 RGB image; deterministic in (name, severity, seed)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(name)])
    return CORRUPTIONS[name](img, severity, rng)


def corrupt_all(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """The same corruption and severity on every image (image i seeded by seed + i)."""
    return np.stack([corrupt(img, name, severity, seed + i) for i, img in enumerate(images)])


def corrupted_copy(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Each image under one corruption drawn at random (seeded), severity 1..5.

    The field-like test set: what a model meets on another lab's microscope.
    Returns the images and the (corruption, severity) applied to each.
    """
    rng = np.random.default_rng(seed)
    names = list(CORRUPTIONS)
    plan = [(names[int(rng.integers(len(names)))], int(rng.integers(1, 6))) for _ in range(len(images))]
    out = np.stack([corrupt(img, n, s, seed + i) for i, (img, (n, s)) in enumerate(zip(images, plan))])
    return out, plan
