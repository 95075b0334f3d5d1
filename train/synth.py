"""Synthetic blood smears: scopelite's embedded default data.

A seeded generator of May-Grünwald-Giemsa-like single-cell crops for the 8
classes, of whole microscope fields with cells at known positions, and of a
short microscope video. Morphology follows the real cells: size, nucleus shape
and lobes, granules and their colour, cytoplasm colour, red cells around.

It is not real data and says so: everything trained on it is marked synthetic.
Needs only numpy and OpenCV.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from scopelite.edge.bundle import CLASS_NAMES

from .memory import image_array

# Colours (RGB) of a May-Grünwald-Giemsa stain.
PLASMA = (232, 218, 222)
RBC = (214, 142, 146)
CHROMATIN_DARK = (72, 30, 108)
CHROMATIN_MID = (112, 66, 150)
CHROMATIN_LIGHT = (140, 96, 170)

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


def _pt(x, y):
    return int(round(x * _ONE)), int(round(y * _ONE))


def _jit(rng, color, amount=12):
    return tuple(float(np.clip(c + rng.normal(0, amount), 0, 255)) for c in color)


def _disc(img, x, y, r, color):
    cv2.circle(img, _pt(x, y), max(int(round(r * _ONE)), 1), color, -1, cv2.LINE_AA, _SHIFT)


def _ellipse(img, x, y, a, b, angle, color):
    cv2.ellipse(img, _pt(x, y), (max(int(a * _ONE), 1), max(int(b * _ONE), 1)), angle, 0, 360, color, -1, cv2.LINE_AA, _SHIFT)


def _granules(img, rng, x, y, radius, n, size, color, jitter=10):
    r = radius * np.sqrt(rng.random(n))
    t = rng.random(n) * 2 * np.pi
    for ri, ti in zip(r, t):
        _disc(img, x + ri * np.cos(ti), y + ri * np.sin(ti), size * rng.uniform(0.7, 1.3), _jit(rng, color, jitter))


def _red_cell(img, rng, x, y, s):
    r = rng.uniform(10.5, 13.5) * s
    shade = rng.normal(0, 10)  # red cells vary in haemoglobin (brightness), not in hue
    colour = _jit(rng, tuple(c + shade for c in RBC), 3)
    _ellipse(img, x, y, r, r * rng.uniform(0.88, 1.0), rng.uniform(0, 180), colour)
    pallor = tuple(c + 0.55 * (p - c) for c, p in zip(colour, PLASMA))
    _disc(img, x + rng.normal(0, 0.8 * s), y + rng.normal(0, 0.8 * s), r * rng.uniform(0.35, 0.5), pallor)


# --------------------------------------------------------------------------- the 8 classes
# Each draws one cell centred on (x, y) at pixel scale s (s=1: a 96x96 crop)
# and returns its radius in pixels.


def _lobed_nucleus(img, rng, x, y, s, n_lobes, lobe_r, spread, color):
    """A chain of lobes along an arc, joined by thin strands (segmented nucleus)."""
    start = rng.uniform(0, 2 * np.pi)
    arc = rng.uniform(1.6, 3.2)
    pts = []
    for i in range(n_lobes):
        t = start + arc * (i / max(n_lobes - 1, 1) - 0.5)
        pts.append((x + spread * s * np.cos(t), y + spread * s * np.sin(t)))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        cv2.line(img, _pt(x0, y0), _pt(x1, y1), color, max(int(1.6 * s), 1), cv2.LINE_AA, _SHIFT)
    for px, py in pts:
        _ellipse(img, px, py, lobe_r * s * rng.uniform(0.85, 1.15), lobe_r * s * rng.uniform(0.6, 0.9), rng.uniform(0, 180), _jit(rng, color, 10))


def _neutrophil(img, rng, x, y, s):
    r = rng.uniform(21, 25) * s
    _disc(img, x, y, r, _jit(rng, (224, 196, 214), 8))
    _granules(img, rng, x, y, r * 0.9, 60, 0.7 * s, (200, 160, 195), 8)
    _lobed_nucleus(img, rng, x, y, s, int(rng.integers(3, 6)), 5.5, 9.0, _jit(rng, CHROMATIN_DARK, 10))
    return r


def _eosinophil(img, rng, x, y, s):
    r = rng.uniform(22, 26) * s
    _disc(img, x, y, r, _jit(rng, (232, 170, 150), 8))
    _granules(img, rng, x, y, r * 0.93, 170, 1.5 * s, (226, 112, 78), 14)
    _lobed_nucleus(img, rng, x, y, s, 2, 7.0, 7.5, _jit(rng, CHROMATIN_MID, 10))
    return r


def _basophil(img, rng, x, y, s):
    r = rng.uniform(18, 22) * s
    _disc(img, x, y, r, _jit(rng, (196, 170, 210), 8))
    _ellipse(img, x, y, r * 0.6, r * 0.5, rng.uniform(0, 180), _jit(rng, CHROMATIN_MID, 10))
    _granules(img, rng, x, y, r * 0.92, 110, 1.9 * s, (58, 22, 84), 12)
    return r


def _lymphocyte(img, rng, x, y, s):
    r = rng.uniform(14, 17.5) * s
    _disc(img, x, y, r, _jit(rng, (166, 188, 232), 10))
    nr = r * rng.uniform(0.78, 0.88)
    _disc(img, x + rng.normal(0, 1.2 * s), y + rng.normal(0, 1.2 * s), nr, _jit(rng, CHROMATIN_DARK, 8))
    _granules(img, rng, x, y, nr * 0.8, 25, 1.2 * s, (52, 18, 84), 6)
    return r


def _monocyte(img, rng, x, y, s):
    r = rng.uniform(27, 31) * s
    _ellipse(img, x, y, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, 180), _jit(rng, (186, 184, 214), 8))
    for _ in range(int(rng.integers(2, 7))):  # vacuoles
        t, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.85) * r
        _disc(img, x + d * np.cos(t), y + d * np.sin(t), rng.uniform(1.5, 3.0) * s, _jit(rng, (236, 232, 240), 4))
    # Kidney-shaped nucleus: an ellipse with a bite taken out of one side.
    t = rng.uniform(0, 2 * np.pi)
    nx, ny = x + 3 * s * np.cos(t), y + 3 * s * np.sin(t)
    _ellipse(img, nx, ny, 15 * s, 11 * s, np.degrees(t) + 90, _jit(rng, CHROMATIN_LIGHT, 8))
    _disc(img, nx + 11 * s * np.cos(t), ny + 11 * s * np.sin(t), 7 * s, _jit(rng, (186, 184, 214), 6))
    return r


def _immature_granulocyte(img, rng, x, y, s):
    r = rng.uniform(25, 29) * s
    _disc(img, x, y, r, _jit(rng, (196, 172, 212), 8))
    _granules(img, rng, x, y, r * 0.9, 50, 1.0 * s, (150, 90, 160), 10)
    t = rng.uniform(0, 2 * np.pi)
    nx, ny = x + 5 * s * np.cos(t), y + 5 * s * np.sin(t)
    nr = r * rng.uniform(0.58, 0.68)
    _ellipse(img, nx, ny, nr, nr * rng.uniform(0.8, 0.95), rng.uniform(0, 180), _jit(rng, CHROMATIN_LIGHT, 8))
    _granules(img, rng, nx, ny, nr * 0.85, 40, 1.4 * s, (98, 52, 136), 8)  # open chromatin
    return r


def _erythroblast(img, rng, x, y, s):
    r = rng.uniform(13, 16) * s
    _disc(img, x, y, r, _jit(rng, (196, 150, 176), 8))
    _disc(img, x + rng.normal(0, 1.5 * s), y + rng.normal(0, 1.5 * s), r * rng.uniform(0.55, 0.68), _jit(rng, (44, 18, 60), 6))
    return r


def _platelet(img, rng, x, y, s):
    n = int(rng.integers(1, 4))
    for _ in range(n):
        px, py = x + rng.normal(0, 3.5 * s), y + rng.normal(0, 3.5 * s)
        pr = rng.uniform(3.0, 4.8) * s
        _ellipse(img, px, py, pr, pr * rng.uniform(0.6, 0.95), rng.uniform(0, 180), _jit(rng, (176, 142, 200), 8))
        _granules(img, rng, px, py, pr * 0.7, 6, 0.9 * s, (96, 46, 130), 8)
    return 8.0 * s


DRAW: dict[str, Callable] = {
    "basophil": _basophil,
    "eosinophil": _eosinophil,
    "erythroblast": _erythroblast,
    "immature_granulocyte": _immature_granulocyte,
    "lymphocyte": _lymphocyte,
    "monocyte": _monocyte,
    "neutrophil": _neutrophil,
    "platelet": _platelet,
}
assert tuple(DRAW) == CLASS_NAMES


# --------------------------------------------------------------------------- scenes


def _finish(img, rng, s):
    """Optics and camera: slight defocus, stain intensity, sensor noise."""
    sigma = rng.uniform(0.4, 1.0) * s
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    gain = rng.normal(1.0, 0.04, size=3)  # per-channel stain/white-balance drift
    img = img * gain + rng.normal(0, 3.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(height: int, width: int, cells: list[tuple[int, float, float]], scale: float,
                 rng: np.random.Generator, red_cells: int) -> np.ndarray:
    """Plasma, ``red_cells`` red cells, then ``cells`` = [(class index, x, y)] on top."""
    img = np.empty((height, width, 3), np.float32)
    img[:] = _jit(rng, PLASMA, 5)
    for _ in range(red_cells):
        _red_cell(img, rng, rng.uniform(0, width), rng.uniform(0, height), scale)
    for cls, x, y in cells:
        DRAW[CLASS_NAMES[cls]](img, rng, x, y, scale)
    return _finish(img, rng, scale)


def make_crops(n_per_class: int, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Single-cell crops, classes interleaved.

    Returns:
        images: uint8 (8 * n_per_class, size, size, 3), RGB.
        labels: int64 class indices into CLASS_NAMES.
    """
    rng = np.random.default_rng(seed)
    s = size / 96.0
    n = n_per_class * len(CLASS_NAMES)
    images = image_array(n, size, "generating synthetic crops", "give a smaller --image-size or --per-class")
    labels = np.tile(np.arange(len(CLASS_NAMES)), n_per_class)
    for i, cls in enumerate(labels):
        cx, cy = size / 2 + rng.normal(0, 2.5 * s), size / 2 + rng.normal(0, 2.5 * s)
        images[i] = render_scene(size, size, [(int(cls), cx, cy)], s, rng, int(rng.integers(3, 9)))
    return images, labels.astype(np.int64)


def make_field(rng: np.random.Generator, width: int = 640, height: int = 480, n_cells: int = 8,
               scale: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """A whole field with ``n_cells`` cells at known, non-overlapping positions.

    Returns:
        image: uint8 (height, width, 3) RGB.
        cells: [{"label", "center": [x, y], "box": [x0, y0, x1, y1]}] (box approximate).
    """
    placed: list[tuple[int, float, float]] = []
    margin = 34 * scale
    tries = 0
    while len(placed) < n_cells and tries < 2000:
        tries += 1
        x, y = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
        if all((x - px) ** 2 + (y - py) ** 2 > (70 * scale) ** 2 for _, px, py in placed):
            placed.append((int(rng.integers(len(CLASS_NAMES))), x, y))
    n_rbc = int(width * height / (26 * 26 * scale * scale) * 0.55)
    img = render_scene(height, width, placed, scale, rng, n_rbc)
    cells = []
    for cls, x, y in placed:
        r = (10 if CLASS_NAMES[cls] == "platelet" else 30) * scale
        cells.append({"label": CLASS_NAMES[cls], "center": [round(x, 1), round(y, 1)],
                      "box": [int(x - r), int(y - r), int(x + r), int(y + r)]})
    return img, cells


def write_video(path: str | os.PathLike, n_per_class: int = 2, frames_per_cell: int = 6, seed: int = 0,
                width: int = 640, height: int = 480, fps: float = 10.0) -> list[str]:
    """A microscope video: the stage moves from cell to cell, each centred for a few frames.

    Centred cells are drawn at the scale a centre crop sees them at (a square
    of side ``height`` resized to 96 px). Returns the true label of each frame.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), n_per_class))
    s = height / 96.0
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write video {path}")
    truth = []
    try:
        for cls in order:
            # Render a scene larger than the frame, then pan across it slightly.
            pad = int(8 * s)
            base = render_scene(height + 2 * pad, width + 2 * pad,
                                [(int(cls), width / 2 + pad, height / 2 + pad)], s, rng, int(rng.integers(4, 12)))
            for f in range(frames_per_cell):
                dx, dy = (int(v) for v in rng.integers(-pad // 2, pad // 2 + 1, size=2))
                frame = base[pad + dy : pad + dy + height, pad + dx : pad + dx + width]
                noisy = np.clip(frame + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8)
                writer.write(cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
                truth.append(CLASS_NAMES[int(cls)])
    finally:
        writer.release()
    # VideoWriter.write says nothing when the disk is full: a video cut short was recorded as whole
    cap, readable = cv2.VideoCapture(str(tmp)), 0
    while cap.read()[0]:
        readable += 1
    cap.release()
    if readable != len(truth):
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write video {path}: {readable} of its {len(truth)} frames reached the disk (disk full, "
                      "or a file-size limit?)")
    os.replace(tmp, path)
    return truth


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image as PNG through Python's file I/O: a failed write raises its OSError (disk full), where
    cv2.imwrite only returns False, which was not looked at."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV cannot encode {path} as PNG")
    try:
        path.write_bytes(buf.tobytes())
    except OSError as e:  # a failed write's error names no file
        raise OSError(e.errno, e.strerror, str(path)) from None


def write_dataset(out: str | os.PathLike, n_per_class: int = 100, size: int = 96, seed: int = 0,
                  n_fields: int = 4, video: bool = True) -> dict:
    """Write crops as class folders of PNGs, fields with their truth, and a video."""
    out = Path(out)
    images, labels = make_crops(n_per_class, size=size, seed=seed)
    counts = {}
    for i, (img, lab) in enumerate(zip(images, labels)):
        d = out / "crops" / CLASS_NAMES[lab]
        d.mkdir(parents=True, exist_ok=True)
        _write_png(d / f"synth_{i:05d}.png", img)
        counts[CLASS_NAMES[lab]] = counts.get(CLASS_NAMES[lab], 0) + 1
    rng = np.random.default_rng(seed + 1)
    fields = []
    (out / "fields").mkdir(parents=True, exist_ok=True)
    for j in range(n_fields):
        img, cells = make_field(rng)
        name = f"field_{j:03d}.png"
        _write_png(out / "fields" / name, img)
        fields.append({"file": name, "cells": cells})
    (out / "fields" / "truth.json").write_text(json.dumps(fields, indent=1))
    manifest = {"synthetic": True, "generator": "scopelite.train.synth", "seed": seed,
                "crops": counts, "image_size": size, "fields": n_fields}
    if video:
        truth = write_video(out / "microscope.avi", seed=seed + 2)
        (out / "microscope_truth.json").write_text(json.dumps(truth))
        manifest["video"] = {"file": "microscope.avi", "frames": len(truth)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
