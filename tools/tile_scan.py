"""A slide scanned as overlapping tiles (a motorised stage, a slide scanner), counted from a folder.

Generated slides (train/slide.py, 2600 x 1700 px, seeds 1-3) are cut into 640 x 480 tiles on a regular grid, each
overlapping its neighbours by 10-50 %, written in raster or serpentine order as PNG files (sorted order = scan
order), and counted by ``celledge watch FOLDER --mode field`` with ``--track`` and with ``--no-track`` (a folder's
default), the shipped model, default options. Truth: cells wholly inside at least one tile. Each counted cell is
placed on the slide from the tile and place it was first seen at (a frame held back after a jump names no track in
its line: such a cell is found by its score vector), so a cell counted twice and a cell never counted are told
apart from the totals. Written for a trial of session 35 (the key-frame spacing and the serpentine's turn).

    python tools/tile_scan.py [--seeds 1,2,3] [--overlaps 0.1,0.25,0.3,0.4,0.5] [--before PYTHONPATH] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge.sysinfo import machine
from scopelite.train.slide import make_slide_scan

W, H, SLIDE = 640, 480, (2600, 1700)


def tile_path(overlap: float, order: str) -> list[tuple[int, int]]:
    sx, sy = int(round(W * (1 - overlap))), int(round(H * (1 - overlap)))
    xs, ys = list(range(0, SLIDE[0] - W + 1, sx)), list(range(0, SLIDE[1] - H + 1, sy))
    return [(x, y) for r, y in enumerate(ys) for x in (xs[::-1] if order == "serpentine" and r % 2 else xs)]


def watch(folder: Path, mode: str, env: dict | None) -> tuple[list[dict], dict]:
    cmd = [str(Path(sys.executable).parent / "celledge"), "watch", str(folder), "--mode", "field", f"--{mode}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines[:-1], lines[-1]["summary"]


def score(frames: list[dict], summary: dict, path: list, cells: list[dict]) -> dict:
    xy = np.array([c["center"] for c in cells], float)
    radius = np.array([c["radius"] for c in cells], float)

    def cell_at(tile: int, centre) -> int | None:
        d = np.hypot(*(xy - (np.asarray(centre, float) + path[tile])).T)
        k = int(d.argmin())
        return k if d[k] < max(radius[k], 20.0) else None

    def tile_of(rec: dict) -> int:
        return int(Path(rec["file"]).stem)

    counted: list[int | None] = []
    if summary.get("tracking", {}).get("on"):
        seen: dict[int, list] = {}
        for f in frames:
            for c in f.get("cells", []):
                if "track" in c:
                    seen.setdefault(c["track"], []).append(cell_at(tile_of(f), c["center"]))
        loose = [(tile_of(f), c) for f in frames for c in f.get("cells", []) if "track" not in c]
        for e in [e for f in frames for e in f.get("counted", [])] + summary.get("counted", []):
            ks = seen.get(e["track"])
            if not ks:
                near = min(loose, key=lambda tc: np.abs(np.subtract(tc[1]["scores"], e["scores"])).sum(), default=None)
                if near is None or np.abs(np.subtract(near[1]["scores"], e["scores"])).sum() > 1e-3:
                    counted.append(None)
                    continue
                ks = [cell_at(near[0], near[1]["center"])]
            counted.append(Counter(ks).most_common(1)[0][0])
    else:
        counted = [cell_at(tile_of(f), e["center"]) for f in frames for e in f.get("counted", [])]
    whole = {i for i, c in enumerate(cells) if c["whole_tiles"] >= 1}
    n = Counter(k for k in counted if k is not None)
    t = summary.get("tracking", {})
    return {"counted": len(counted), "twice": sum(v - 1 for v in n.values() if v > 1), "missed": len(whole - set(n)),
            "not_whole_in_any_tile": len(set(n) - whole), "unplaced": sum(k is None for k in counted),
            "view_jumps": t.get("view_jumps"), "view_returns": t.get("view_returns")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--overlaps", default="0.1,0.25,0.3,0.4,0.5")
    ap.add_argument("--before", metavar="PYTHONPATH", default=None, help="also --track with the scopelite there")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                                         / "tile-scan.json"))
    a = ap.parse_args()
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        scan = make_slide_scan(seed, slide_size=SLIDE, speed=(8.0, 20.0))
        for overlap in (float(f) for f in a.overlaps.split(",")):
            for order in ("raster", "serpentine"):
                path = tile_path(overlap, order)
                scan.path, scan.blur = path, [0.0] * len(path)
                whole = {c["id"]: 0 for c in scan.cells}
                for i in range(len(path)):
                    for v in scan.visible(i):
                        whole[v["id"]] += 1
                cells = [dict(c, whole_tiles=whole[c["id"]]) for c in scan.cells]
                row = {"seed": seed, "overlap": overlap, "order": order, "tiles": len(path),
                       "true": sum(v >= 1 for v in whole.values())}
                with tempfile.TemporaryDirectory() as tmp:
                    for i in range(len(path)):  # each tile a fresh exposure (sensor noise)
                        cv2.imwrite(str(Path(tmp) / f"{i:04d}.png"), cv2.cvtColor(scan.frame(i), cv2.COLOR_RGB2BGR))
                    runs = [("track", "track", None), ("no-track", "no-track", None)]
                    if a.before:
                        runs.append(("track_before", "track", {**os.environ, "PYTHONPATH": a.before}))
                    for key, mode, env in runs:
                        row[key] = score(*watch(Path(tmp), mode, env), path, cells)
                rows.append(row)
                print(json.dumps(row), flush=True)
    rec = {"what": __doc__.splitlines()[0], "command": "python " + " ".join(sys.argv), "machine": machine(),
           "date": datetime.date.today().isoformat(), "how": " ".join(__doc__.split("\n\n")[1].split()), "rows": rows}
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
