"""A synthetic slide scan: a smear larger than the view, and the stage moving over it.

For the tracker's tests and benchmarks. The slide is one ``synth.make_field``
(the same cells, red cells, stain and optics) of ``slide_size`` px; the view is
a ``frame_size`` window whose top-left corner follows a scan path: serpentine
rows that overlap (so cells are seen again from the next row), panning at a
few px per frame with pauses, jerks (a sudden step of tens of px), short
back-and-forth moves, and a few defocused frames (refocusing). Each frame gets
its own sensor noise. Every cell lies at least 34 px from the slide edge and
the rows cover the whole slide, so every cell passes wholly through the view.

Needs only numpy and OpenCV.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from .synth import make_field


@dataclass
class SlideScan:
    """A slide, its cells and a scan path. ``frames()`` renders the view frame by frame."""

    slide: np.ndarray  # uint8 (H, W, 3) RGB
    cells: list[dict]  # [{"id", "label", "center": [x, y] on the slide, "radius"}]
    path: list[tuple[int, int]]  # top-left corner of the view on the slide, per frame
    blur: list[float]  # Gaussian sigma of each frame's defocus (0: in focus)
    frame_size: tuple[int, int] = (640, 480)  # width, height
    seed: int = 0
    events: list[tuple[int, str]] = field(default_factory=list)  # (frame, pause|jerk|back|refocus|row)
    _noise: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.path)

    def visible(self, i: int, margin: float | None = None) -> list[dict]:
        """Cells wholly in frame ``i`` (their radius inside the border, or ``margin`` px), frame coordinates."""
        x0, y0 = self.path[i]
        w, h = self.frame_size
        out = []
        for c in self.cells:
            m = c["radius"] if margin is None else margin
            fx, fy = c["center"][0] - x0, c["center"][1] - y0
            if m <= fx <= w - m and m <= fy <= h - m:
                out.append({"id": c["id"], "label": c["label"], "center": [fx, fy]})
        return out

    def frames_in_view(self) -> dict[int, int]:
        """How many frames each cell is wholly in view: {cell id: frames}."""
        seen = {c["id"]: 0 for c in self.cells}
        for i in range(len(self)):
            for c in self.visible(i):
                seen[c["id"]] += 1
        return seen

    def frame(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Frame ``i``: the view cut from the slide, defocused if that frame is, with sensor noise."""
        rng = rng or np.random.default_rng((self.seed, i))
        x0, y0 = self.path[i]
        w, h = self.frame_size
        view = self.slide[y0 : y0 + h, x0 : x0 + w]
        if self.blur[i] > 0:
            view = cv2.GaussianBlur(view, (0, 0), self.blur[i])
        # Sensor noise: a window of one noise field drawn once per scan (numpy's normal per frame
        # costs 12 ms at 640x480); the window moves randomly, so consecutive frames differ.
        if self._noise is None:
            self._noise = np.random.default_rng(self.seed).normal(0, 2.0, (h + 64, w + 64, 3)).astype(np.int16)
        nx, ny = (int(v) for v in rng.integers(0, 64, size=2))
        noisy = view.astype(np.int16) + self._noise[ny : ny + h, nx : nx + w]
        return np.clip(noisy, 0, 255).astype(np.uint8)

    def frames(self) -> Iterator[tuple[np.ndarray, dict]]:
        """(frame RGB uint8, truth) per frame; truth = {"frame", "offset": [x0, y0], "cells": visible(i)}."""
        for i in range(len(self)):
            yield self.frame(i), {"frame": i, "offset": list(self.path[i]), "cells": self.visible(i)}


def scan_path(rng: np.random.Generator, slide_wh: tuple[int, int], frame_wh: tuple[int, int],
               speed: tuple[float, float], row_overlap: float, events: bool) -> tuple[list[tuple[int, int]], list[float], list[tuple[int, str]]]:
    """Serpentine rows over the slide with pauses, jerks, back-and-forth moves and refocusing."""
    (sw, sh), (w, h) = slide_wh, frame_wh
    max_x, max_y = sw - w, sh - h
    n_rows = max(int(np.ceil(max_y / (h * (1 - row_overlap)))), 1) + 1
    rows = np.linspace(0, max_y, n_rows)
    path: list[tuple[float, float]] = []
    log: list[tuple[int, str]] = []
    x, y = 0.0, 0.0

    def step(nx: float, ny: float) -> None:
        jitter = rng.normal(0, 0.7, 2) if events else np.zeros(2)  # stage backlash, hand on the knob
        path.append((float(np.clip(nx + jitter[0], 0, max_x)), float(np.clip(ny + jitter[1], 0, max_y))))

    for r, row_y in enumerate(rows):
        if r:  # move down to the next row
            log.append((len(path), "row"))
            while y < row_y:
                y = min(y + rng.uniform(*speed), row_y)
                step(x, y)
        for _ in range(int(rng.integers(4, 10))):  # the row's end: look, then go on
            step(x, y)
        target = max_x if r % 2 == 0 else 0.0
        direction = 1.0 if target > x else -1.0
        while (target - x) * direction > 0:
            u = rng.random() if events else 1.0
            if u < 0.03:  # pause
                log.append((len(path), "pause"))
                for _ in range(int(rng.integers(5, 25))):
                    step(x, y)
            elif u < 0.06:  # jerk: one sudden step
                log.append((len(path), "jerk"))
                x += direction * rng.uniform(20, 45)
                y = float(np.clip(y + rng.uniform(-12, 12), 0, max_y))
                step(x, y)
            elif u < 0.08:  # back a little, then on again
                log.append((len(path), "back"))
                v = rng.uniform(*speed)
                for _ in range(int(rng.integers(6, 20))):
                    x = float(np.clip(x - direction * v, 0, max_x))
                    step(x, y)
            else:
                x = float(np.clip(x + direction * rng.uniform(*speed), 0, max_x))
                y += 0.2 * (row_y - y)  # the operator steers back onto the row
                step(x, y)
    for _ in range(int(rng.integers(4, 10))):  # the last row's end
        step(x, y)
    path_i = [(int(round(px)), int(round(py))) for px, py in path]
    blur = [0.0] * len(path_i)
    if events:
        for start in rng.choice(len(path_i), size=max(len(path_i) // 80, 1), replace=False):
            log.append((int(start), "refocus"))
            for j in range(int(start), min(int(start) + int(rng.integers(2, 5)), len(blur))):
                blur[j] = float(rng.uniform(1.5, 3.0))
    return path_i, blur, sorted(log)


def make_slide_scan(seed: int = 0, n_cells: int | None = None, slide_size: tuple[int, int] = (1400, 1000),
                    frame_size: tuple[int, int] = (640, 480), speed: tuple[float, float] = (6.0, 16.0),
                    row_overlap: float = 0.35, events: bool = True) -> SlideScan:
    """A slide with known cells and a scan path over it.

    Args:
        seed: everything (cells, classes, path, noise) follows from it.
        n_cells: cells on the slide (None: random, about 8 per frame area).
        slide_size, frame_size: (width, height) in px.
        speed: range of the pan speed, px per frame.
        row_overlap: fraction of the view's height that consecutive rows share (cells seen twice).
        events: pauses, jerks, back-and-forth, jitter and refocusing; False: a smooth serpentine.

    Returns:
        A SlideScan; its ``cells`` are the ground truth (id, label, slide position, radius).
    """
    rng = np.random.default_rng(seed)
    sw, sh = slide_size
    if n_cells is None:
        n_cells = int(rng.integers(6, 10) * sw * sh / (frame_size[0] * frame_size[1]))
    slide, cells = make_field(rng, sw, sh, n_cells=n_cells)
    truth = [{"id": i, "label": c["label"], "center": c["center"], "radius": (c["box"][2] - c["box"][0]) / 2}
             for i, c in enumerate(cells)]
    path, blur, log = scan_path(rng, slide_size, frame_size, speed, row_overlap, events)
    return SlideScan(slide, truth, path, blur, tuple(frame_size), seed, log)
