"""A count hunt on real cells: stage paths that have counted cells wrongly, each with its truth.

32 real PBC fields tiled into one slide (benchmarks/pbc_slide_scan.py's ``make_slide``, seed 0 unless --seed) and a
640 x 480 view moved over it along paths a hand or a camera makes (pans, jumps back, the next row reached by a cut,
fields alternating, pans too fast, the lamp dimmed or the view defocused on a return, blank frames, a frame held at
the end, diagonal pans). Each path is written as a lossless video and counted by ``celledge watch VIDEO --mode
field`` with the shipped model and default options. Truth: the tiles' nucleated centre cells wholly in view (a
60 px radius) in 3 frames running (``true``: what the tracker is built to count), and in at least one frame
(``true_once``: the cells the view passed). A counted cell is placed on its tile from the frame it was first seen in;
``twice`` lists tiles whose centre cell was counted more than once. Sessions 33-35 hunted with these paths
(count-hunt-3x.json); session 37 judged decisions 37a and 37d with them (tile-scan-37.json).

    python tools/count_hunt.py --data ../shared/data [--seed N] [--before PYTHONPATH] [--only TEXT] [--out FILE]

``--before``: also count every path with the scopelite found there (an export of an earlier commit:
scopelite/{edge,train,compress}), for a before/after table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pbc_slide_scan import COLS, NUCLEATED, ROWS, TILE, make_slide  # noqa: E402

from scopelite.edge.sysinfo import machine  # noqa: E402

W, H = 640, 480
RADIUS = 60  # px: a centre cell is wholly in view when its centre lies this far inside the frame
MAXX, MAXY = COLS * TILE - W, ROWS * TILE - H


def pan(x0, x1, y, step=10.0, **mod):
    n = max(int(abs(x1 - x0) / step), 1)
    return [dict(x=x0 + (x1 - x0) * k / n, y=y, **mod) for k in range(n + 1)]


def line(x0, y0, x1, y1, step=10.0):
    n = max(int(np.hypot(x1 - x0, y1 - y0) / step), 1)
    return [dict(x=x0 + (x1 - x0) * k / n, y=y0 + (y1 - y0) * k / n) for k in range(n + 1)]


def still(x, y, n, **mod):
    return [dict(x=x, y=y, **mod) for _ in range(n)]


def alternate(ax, ay, bx, by, n=20, reps=2):
    return (still(ax, ay, n) + still(bx, by, n)) * reps


def with_move(step, move):
    return pan(0, 700, 0, step) + pan(700 + move, 1400, 0, step) + pan(1400 + move, MAXX, 0, step)


def fast(step):
    return pan(0, MAXX, 0, step) + pan(MAXX, 0, 480, step) + pan(0, MAXX, 960, step)


def paths() -> dict[str, list[dict]]:
    a, b = pan(0, 1200, 0), pan(1200, 2240, 960)
    blank = [dict(x=0, y=0, blank=20)] * 5
    return {
        "A, far B, back to A's start": a + b + pan(0, MAXX, 0),
        "A, far B, back to A's middle": a + b + pan(600, MAXX, 0),
        "A, far B, back to A, with stills": still(0, 0, 5) + a + still(1200, 0, 5) + still(1200, 960, 5) + b
        + still(0, 0, 10) + pan(0, MAXX, 0),
        "a row, a cut to 160 px lower": pan(0, 1200, 0) + pan(0, 1200, 160),
        "a row, a cut to 240 px lower": pan(0, 1200, 0) + pan(0, 1200, 240),
        "a row, a cut to 320 px along": pan(0, 1200, 0) + pan(320, 1520, 0),
        "a row, a cut to 320 px lower": pan(0, 1200, 0) + pan(0, 1200, 320),
        "a row, a cut to 280 px lower": pan(0, 1200, 180) + pan(0, 1200, 460),
        "a row, a cut to 360 px lower": pan(0, 1200, 100) + pan(0, 1200, 460),
        "a row, down 280 px panned, back": pan(0, 1200, 180) + [dict(x=1200, y=180 + k * 10) for k in range(1, 29)]
        + pan(1200, 0, 460),
        "a half row, a cut 320 px on": pan(0, 600, 0) + pan(920, 1500, 0),
        "A, >64 key frames elsewhere, A": pan(0, 1200, 0) + pan(0, MAXX, 480) + pan(MAXX, 0, 960) + pan(0, MAXX, 720)
        + pan(0, 1200, 0),
        "back to A's start, lamp 0.7x": a + b + pan(0, MAXX, 0, gain=0.7),
        "back to A's start, defocused": a + b + pan(0, MAXX, 0, blur=1.5),
        "back to A's middle, lamp 0.7x": a + b + pan(600, MAXX, 0, gain=0.7),
        "back to A's middle, defocused": a + b + pan(600, MAXX, 0, blur=1.5),
        **{f"three rows at {s} px a frame": fast(s) for s in (100, 120, 150, 200, 250, 280, 330, 400)},
        "10 px a frame, one 150 px move": with_move(10, 150),
        "10 px a frame, one 200 px move": with_move(10, 200),
        "100 px a frame, one 170 px move": with_move(100, 170),
        "A, far B, one frame of A": a + b + still(0, 0, 1),
        "A, far B, two frames of A": a + b + still(0, 0, 2),
        "blank frames between fields": a + blank + b + blank + pan(0, MAXX, 0),
        "A, B, A still, 30 frames each": still(0, 0, 30) + still(1600, 960, 30) + still(0, 0, 30),
        "A, B alternating, 10 frames, x4": (still(0, 0, 10) + still(1600, 960, 10)) * 4,
        "A, B 213 px along, alternating": alternate(0, 0, 213, 0),
        "A, B 300 px along, alternating": alternate(0, 0, 300, 0),
        "A, B 160 px lower, alternating": alternate(0, 300, 0, 460),
        "A, B 240 px lower, alternating": alternate(0, 200, 0, 440),
        "A, B 160 px along, alternating": alternate(0, 0, 160, 0),
        "a diagonal pan, 10 px a frame": line(0, 0, MAXX, MAXY),
        "a diagonal pan, 25 px a frame": line(0, 0, MAXX, MAXY, 25.0),
        "a 45-degree pan down and left, 15 px a frame": line(1200, 0, 240, MAXY, 15.0),
        "a diagonal zig-zag, 10 px a frame": line(0, 0, 700, 480) + line(700, 480, 1400, 0) + line(1400, 0, 2100, 480),
        "new regions, cut to each": pan(0, 1000, 0) + pan(0, 1000, 960) + pan(1240, 2240, 480) + pan(1240, 2240, 0),
    }


_noise = np.random.default_rng(0).normal(0, 2.0, (H + 64, W + 64, 3)).astype(np.int16)


def render(slide: np.ndarray, step: dict, i: int) -> np.ndarray:
    if step.get("blank"):
        return np.full((H, W, 3), step["blank"], np.uint8)
    x0, y0 = int(round(step["x"])), int(round(step["y"]))
    view = slide[y0:y0 + H, x0:x0 + W]
    if step.get("blur", 0) > 0:
        view = cv2.GaussianBlur(view, (0, 0), step["blur"])
    nx, ny = (int(v) for v in np.random.default_rng((7, i)).integers(0, 64, size=2))
    v = view.astype(np.float32) * step.get("gain", 1.0) + _noise[ny:ny + H, nx:nx + W]
    return np.clip(v, 0, 255).astype(np.uint8)


def truth(cells: list[dict], where: list, run: int) -> set[int]:
    """The nucleated tiles' centre cells wholly in view in ``run`` frames running."""
    seen = set()
    for c in cells:
        if c["label"] not in NUCLEATED:
            continue
        (cx, cy), n = c["center"], 0
        for m in where:
            inside = m is not None and RADIUS <= cx - m[0] <= W - RADIUS and RADIUS <= cy - m[1] <= H - RADIUS
            n = n + 1 if inside else 0
            if n >= run:
                seen.add(c["id"])
                break
    return seen


def count(video: Path, where: list, cells: list[dict], env: dict | None) -> dict:
    cmd = [str(Path(sys.executable).parent / "celledge"), "watch", str(video), "--mode", "field"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    recs = [json.loads(line) for line in out.strip().splitlines()]
    summary, recs = recs[-1]["summary"], recs[:-1]
    first: dict[int, tuple[int, list]] = {}  # track: the frame it was first seen in, where
    for k, rec in enumerate(recs):
        for c in rec.get("cells", []):
            if "track" in c:
                first.setdefault(c["track"], (k, c["center"]))
    counted = [e for r in recs for e in r.get("counted", []) if "track" in e] + summary.get("counted", [])
    tiles: dict[int, list[str]] = {}
    for e in counted:
        f = first.get(e["track"])
        if f is None or where[f[0]] is None:
            continue
        x, y = where[f[0]][0] + f[1][0], where[f[0]][1] + f[1][1]
        tile = int(min(max(y // TILE, 0), ROWS - 1)) * COLS + int(min(max(x // TILE, 0), COLS - 1))
        c = cells[tile]
        if c["label"] in NUCLEATED and np.hypot(x - c["center"][0], y - c["center"][1]) <= 90:
            tiles.setdefault(tile, []).append(e["label"])
    d, t = summary["differential"], summary.get("tracking", {})
    return {"counted_nucleated": d["white_total"] + d.get("nrbc", 0), "uncertain": d["uncertain"]["count"],
            "at_centre_cells": sum(len(v) for v in tiles.values()),
            "twice": {str(k): v for k, v in tiles.items() if len(v) > 1},
            "view_jumps": t.get("view_jumps"), "view_returns": t.get("view_returns")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--before", metavar="PYTHONPATH", default=None)
    ap.add_argument("--only", default=None, metavar="TEXT", help="only the paths whose name holds TEXT")
    ap.add_argument("--seed", type=int, default=0, help="which 32 PBC fields make the slide (make_slide's seed)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                                         / "count-hunt.json"))
    a = ap.parse_args()
    slide, cells = make_slide(Path(a.data), a.seed)
    chosen = paths()
    if a.only:
        chosen = {k: v for k, v in chosen.items() if a.only in k}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, steps in chosen.items():
            video = Path(tmp) / "path.avi"
            w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (W, H))
            for i, s in enumerate(steps):
                w.write(cv2.cvtColor(render(slide, s, i), cv2.COLOR_RGB2BGR))
            w.release()
            where = [None if s.get("blank") else (int(round(s["x"])), int(round(s["y"]))) for s in steps]
            row = {"frames": len(steps), "true": len(truth(cells, where, 3)), "true_once": len(truth(cells, where, 1)),
                   "now": count(video, where, cells, None)}
            if a.before:
                row["before"] = count(video, where, cells, {**os.environ, "PYTHONPATH": a.before})
            rows[name] = row
            print(name, json.dumps(row), flush=True)
    rec = {"what": __doc__.splitlines()[0], "command": "python " + " ".join(sys.argv), "machine": machine(),
           "date": datetime.date.today().isoformat(), "truth": __doc__.split("\n\n")[1].replace("\n", " "),
           "paths": rows}
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
