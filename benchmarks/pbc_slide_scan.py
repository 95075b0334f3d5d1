"""A technician's slide scan from real PBC fields: is each cell counted once, is the differential right?

    python benchmarks/pbc_slide_scan.py --data ../shared/data [--seed 0] [--out benchmarks/results/pbc-slide-scan.json]

32 real PBC fields (4 of each nucleated class, 4 platelet fields; drawn with --seed) are tiled into one
slide (8 x 4 tiles of 360 x 360 px), and a 640 x 480 view pans over it in overlapping serpentine rows
with pauses, jerks, back-and-forth moves and refocusing (train/slide.py's scan path), as a stage moved
by hand. The frames are written as a lossless video and `celledge watch VIDEO --mode field` runs on it
with default options (tracking on, the scale measured from the red cells). Truth: 28 nucleated centre
cells, 4 per class; the white-cell differential is 1/6 each (16.7 %), NRBC 16.7 per 100 white cells.
Nucleated counted = white cells + erythroblasts; cells counted as uncertain are listed apart. A counted
cell's class may be revised when its track closes (over all the frames it was seen): ``cells`` gives the
final label (``counted_as``) and, for a revised one, what it was counted as first (``revised_from``).
Per counted cell (``cells``): the tile it lies on, whether it is that tile's centre cell (within
CENTRE px of the tile's centre) or something else on the tile (a platelet, a cell cut by the
field's border), the tile's class, what it was counted as, from how many whole views, and why.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge.differential import WHITE as WHITE_ORDER
from scopelite.edge.sources import list_images, read_image_rgb
from scopelite.edge.sysinfo import machine
from scopelite.train.slide import SlideScan, scan_path

NUCLEATED = ("basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte", "neutrophil")
TILE, COLS, ROWS = 360, 8, 4
DEFAULT_OUT = Path(__file__).parent / "results" / "pbc-slide-scan.json"
CENTRE = 90  # px: a counted cell this close to its tile's centre is the tile's centre cell (the field's own)


def make_slide(data: Path, seed: int) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    picks = []
    for cls in NUCLEATED + ("platelet",):
        files = list_images([data / "pbc-fields" / cls])
        picks += [(cls, files[i]) for i in rng.choice(len(files), 4, replace=False)]
    order = rng.permutation(len(picks))
    slide = np.zeros((ROWS * TILE, COLS * TILE, 3), np.uint8)
    cells = []
    for k, j in enumerate(order):
        cls, path = picks[j]
        r, c = divmod(k, COLS)
        img = read_image_rgb(path)[:TILE, :TILE]
        slide[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = img
        cells.append({"id": k, "label": cls, "file": path.name,
                      "center": [c * TILE + TILE / 2, r * TILE + TILE / 2], "radius": 60.0})
    return slide, cells


def per_cell(lines: list[str], summary: dict, cells: list[dict], origin: tuple[int, int]) -> list[dict]:
    """Each counted cell, matched to the tile under its slide position (the first frame's coordinates + ``origin``)."""
    records = [json.loads(line) for line in lines]
    events = [e for r in records for e in r.get("counted", []) if "track" in e]
    revised = {r["track"]: r for rec in records + [summary] for r in rec.get("revised", [])}  # the last one wins
    why = {c["ref"]["track"]: c.get("why") for c in summary["differential"]["uncertain"]["cells"]
           if isinstance(c.get("ref"), dict) and "track" in c["ref"]}
    out = []
    for e in events + summary.get("counted", []):
        if e["track"] in revised:  # its class over all the frames it was seen replaced the counted one
            r = revised[e["track"]]
            e = {**e, "label": r["to"], "best": r["best"], "score": r["score"], "revised_from": e["label"],
                 "revised_over_views": r["frames"]}
        x, y = e["slide"][0] + origin[0], e["slide"][1] + origin[1]
        tile = int(min(max(y // TILE, 0), ROWS - 1)) * COLS + int(min(max(x // TILE, 0), COLS - 1))
        cx, cy = cells[tile]["center"]
        d = float(np.hypot(x - cx, y - cy))
        out.append({"track": e["track"], "tile": tile, "tile_class": cells[tile]["label"],
                    "centre_cell": d <= CENTRE, "from_centre_px": round(d), "counted_as": e["label"],
                    "best": e["best"], "score": e["score"], "whole_views": e["frames"], "reason": e["reason"],
                    **({k: e[k] for k in ("revised_from", "revised_over_views") if k in e}),
                    **({"why": why[e["track"]]} if why.get(e["track"]) else {})})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    a = ap.parse_args()
    slide, cells = make_slide(Path(a.data), a.seed)
    rng = np.random.default_rng(a.seed + 1)
    path, blur, events = scan_path(rng, (slide.shape[1], slide.shape[0]), (640, 480), (6.0, 16.0), 0.35, True)
    scan = SlideScan(slide, cells, path, blur, (640, 480), a.seed, events)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "scan.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (640, 480))
        for frame, _ in scan.frames():
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        cmd = [str(Path(sys.executable).parent / "celledge"), "watch", str(video), "--mode", "field",
               "--report", str(Path(tmp) / "report")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"Error: celledge watch failed: {r.stderr[-2000:]}")
        lines = r.stdout.strip().splitlines()
        summary = json.loads(lines[-1])["summary"]
        counted_cells = per_cell(lines[:-1], summary, cells, path[0])
    d = summary["differential"]
    rows = {row["class"]: row for row in d["rows"]}
    white = d["white_total"]
    nrbc = d.get("nrbc", 0)
    truth_pct = 100.0 / len(WHITE_ORDER)
    l1 = sum(abs(rows.get(c, {}).get("percent", 0.0) - truth_pct) for c in WHITE_ORDER) if white else None
    result = {
        "command": f"python benchmarks/pbc_slide_scan.py --data ../shared/data --seed {a.seed}"
                   + ("" if Path(a.out) == DEFAULT_OUT else f" --out {a.out}"),
        "watch_command": "celledge watch scan.avi --mode field --report DIR (default options)",
        "machine": machine(), "date": datetime.date.today().isoformat(), "seed": a.seed,
        "frames": len(scan), "scan_events": {k: sum(1 for _, e in events if e == k) for k in
                                             ("pause", "jerk", "back", "refocus", "row")},
        "truth": {"nucleated": 28, "per_class": 4, "white_percent_each": round(truth_pct, 2), "nrbc_per_100_wbc": 16.67},
        "counted": {"nucleated": white + nrbc, "white": white, "nrbc": nrbc,
                    "uncertain": d["uncertain"]["count"], "platelets": d["platelets"],
                    "rows": {c: {"count": rows.get(c, {}).get("count", 0), "percent": rows.get(c, {}).get("percent", 0.0)}
                             for c in WHITE_ORDER}},
        "nucleated_ratio": round((white + nrbc) / 28, 3),
        "differential_l1_points": None if l1 is None else round(l1, 1),
        "fps": summary["fps"],
        "view_jumps": summary.get("tracking", {}).get("view_jumps"),  # a pan is never a jump (StageMotion.jumped)
        "centre_cells": _centre_cells(counted_cells, cells),
        "cells": counted_cells,
        "tiles": [{k: c[k] for k in ("id", "label", "file")} for c in cells],
        "note": __doc__.strip().splitlines()[2:],
    }
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("frames", "counted", "nucleated_ratio", "differential_l1_points", "fps",
                                             "view_jumps", "centre_cells")},
                     indent=1))


def _centre_cells(counted: list[dict], cells: list[dict]) -> dict:
    """The 28 nucleated centre cells: counted once, with their own class, missed, counted more than once
    (each count's label: a fragment of the cell tracked apart); what else on the tiles was counted as nucleated."""
    out = {"nucleated": 0, "counted_once": 0, "right_class": 0, "missed": [], "more_than_once": [], "wrong_class": []}
    for tile in (c for c in cells if c["label"] != "platelet"):
        mine = [c for c in counted if c["tile"] == tile["id"] and c["centre_cell"]]
        labels = [c["counted_as"] for c in mine]
        out["nucleated"] += 1
        out["counted_once"] += len(mine) == 1
        out["right_class"] += tile["label"] in labels
        if not mine:
            out["missed"].append(tile["id"])
        elif len(mine) > 1:
            out["more_than_once"].append({"tile": tile["id"], "class": tile["label"], "counted_as": labels})
        if mine and tile["label"] not in labels:
            out["wrong_class"].append({"tile": tile["id"], "class": tile["label"], "counted_as": labels,
                                       "best": [c["best"] for c in mine], "score": [c["score"] for c in mine]})
    out["off_centre_counted_as_nucleated"] = [
        {k: c[k] for k in ("tile", "tile_class", "counted_as", "from_centre_px")}
        for c in counted if not c["centre_cell"] and c["counted_as"] in NUCLEATED]
    return out


if __name__ == "__main__":
    main()
