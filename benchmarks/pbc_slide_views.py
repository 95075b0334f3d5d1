"""Why a cell of the PBC slide scan gets the wrong class: each view of each centre cell, classified again four ways.

    python benchmarks/pbc_slide_views.py --data ../shared/data [--seed 0] [--step 2] [--out FILE.json]

The slide and scan path of benchmarks/pbc_slide_scan.py. Every ``step``-th frame goes through field mode's
find -> scale -> crop -> classify (``classify_field``, the red-cell ruler smoothed as ``celledge watch`` smooths
it: every frame measured in order); each whole view (not cut by the frame edge) of a tile's centre cell is
classified as field mode crops it (reflected where the square runs past the frame edge), as the same square cut
from the slide (no padding: what a larger camera would have seen), and both again at PBC's own 360 px. Per view:
accuracy by the share of the square inside the frame, by crop side, sharp or defocused; per cell: the class of the
mean score over its views each way. This separates padding at the frame edge from the scale.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

from pbc_slide_scan import TILE, make_slide
from scopelite.edge import field as field_lib
from scopelite.edge.classifier import make_classifier
from scopelite.edge.packaged import default_model
from scopelite.edge.preprocess import prepare
from scopelite.edge.stain import stain_layers
from scopelite.edge.sysinfo import machine
from scopelite.edge.watch import FieldScale, classify_field, field_config
from scopelite.edge.config import WatchConfig
from scopelite.train.slide import SlideScan, scan_path

PBC_CROP = 360  # PBC's fields are 360 px across, the framing the model was trained on
NEAR = 40  # px: a detection this close to a centre cell's position is that cell


def centre_cells(slide: np.ndarray, cells: list[dict], cfg) -> dict[int, tuple[float, float]]:
    """Slide position of each tile's own cell: the white-sized detection nearest the tile's centre (tile alone)."""
    out = {}
    for c in cells:
        cx, cy = c["center"]
        x0, y0 = int(cx - TILE / 2), int(cy - TILE / 2)
        dets = [d for d in field_lib.detect(slide[y0:y0 + TILE, x0:x0 + TILE], field_lib.FALLBACK_RBC_PX, None, cfg)
                if d.kind == "white"]
        if dets:
            d = min(dets, key=lambda d: np.hypot(d.x - TILE / 2, d.y - TILE / 2))
            out[c["id"]] = (x0 + d.x, y0 + d.y)
    return out


def views(data: Path, seed: int, step: int) -> tuple[list[str], list[dict], list[dict]]:
    slide, cells = make_slide(data, seed)
    rng = np.random.default_rng(seed + 1)
    path, blur, events = scan_path(rng, (slide.shape[1], slide.shape[0]), (640, 480), (6.0, 16.0), 0.35, True)
    scan = SlideScan(slide, cells, path, blur, (640, 480), seed, events)
    clf = make_classifier(default_model())
    cfg = field_config(WatchConfig(mode="field"), clf)
    centres = centre_cells(slide, cells, cfg)
    ids = np.array(list(centres))
    at = np.array([centres[i] for i in ids])
    margin = 400
    padded_slide = np.pad(slide, ((margin, margin), (margin, margin), (0, 0)), mode="reflect")

    def from_slide(x: float, y: float, side: int) -> np.ndarray:
        x0, y0 = int(round(x)) - side // 2 + margin, int(round(y)) - side // 2 + margin
        return padded_slide[y0:y0 + side, x0:x0 + side]

    scale = FieldScale(cfg, every=5)  # as run_watch in field mode with tracking
    rows = []
    for i in range(len(scan)):
        frame = scan.frame(i)
        if i % step:
            scale.measure(frame, stain_layers(frame))  # the ruler sees every frame, as in celledge watch
            continue
        found, info = classify_field(frame, clf, cfg, 0.5, scale)
        side, (fx0, fy0) = info["crop"], path[i]
        for c in found:
            sx, sy = c["center"][0] + fx0, c["center"][1] + fy0
            k = int(np.argmin(np.hypot(at[:, 0] - sx, at[:, 1] - sy)))
            if c["cut"] or np.hypot(at[k, 0] - sx, at[k, 1] - sy) > NEAR:
                continue
            b = c["box"]
            inside = (max(0, min(b[2], 640) - max(b[0], 0)) * max(0, min(b[3], 480) - max(b[1], 0))
                      / ((b[2] - b[0]) * (b[3] - b[1])))
            det = field_lib.Detection(c["center"][0], c["center"][1], (0, 0, 0, 0), 0)
            crops = [from_slide(sx, sy, side), field_lib.crop(frame, det, PBC_CROP), from_slide(sx, sy, PBC_CROP)]
            s = np.asarray(clf.classify(np.stack([prepare(np.ascontiguousarray(x), clf.input_spec) for x in crops])))
            rows.append({"frame": i, "tile": int(ids[k]), "inside": round(inside, 3), "side": side, "blur": blur[i],
                         "field_mode": c["scores"], "slide_cut": np.round(s[0], 4).tolist(),
                         "field_mode_at_360": np.round(s[1], 4).tolist(),
                         "slide_cut_at_360": np.round(s[2], 4).tolist()})
    return list(clf.labels), cells, rows


WAYS = ("field_mode", "slide_cut", "field_mode_at_360", "slide_cut_at_360")


def summarise(labels: list[str], cells: list[dict], rows: list[dict]) -> dict:
    truth = {c["id"]: c["label"] for c in cells}
    rows = [r for r in rows if truth[r["tile"]] != "platelet"]

    def accuracy(sel: list[dict]) -> dict:
        return {"views": len(sel), **{w: round(float(np.mean([labels[int(np.argmax(r[w]))] == truth[r["tile"]]
                                                               for r in sel])), 3) if sel else None for w in WAYS}}

    bands = {"inside": [(0, .6), (.6, .8), (.8, .95), (.95, 1.01)], "side": [(0, 340), (340, 355), (355, 370),
                                                                           (370, 390), (390, 1000)]}
    out = {f"by_{key}": {f"{lo}-{hi}": accuracy([r for r in rows if lo <= r[key] < hi]) for lo, hi in b}
           for key, b in bands.items()}
    out["sharp"] = accuracy([r for r in rows if r["blur"] == 0])
    out["defocused"] = accuracy([r for r in rows if r["blur"] > 0])
    per_cell = []
    for t in sorted({r["tile"] for r in rows}):
        mine = [r for r in rows if r["tile"] == t]
        cell = {"tile": t, "class": truth[t], "views": len(mine),
                "median_side": int(np.median([r["side"] for r in mine]))}
        for w in WAYS:
            m = np.mean([r[w] for r in mine], axis=0)
            cell[w] = [labels[int(np.argmax(m))], round(float(m.max()), 3)]
        per_cell.append(cell)
    out["per_cell_mean"] = per_cell
    out["cells_right"] = {w: sum(c[w][0] == c["class"] for c in per_cell) for w in WAYS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pbc-slide-views.json"))
    a = ap.parse_args()
    labels, cells, rows = views(Path(a.data), a.seed, a.step)
    result = {"command": f"python benchmarks/pbc_slide_views.py --data ../shared/data --seed {a.seed} --step {a.step}",
              "machine": machine(), "date": datetime.date.today().isoformat(),
              "note": __doc__.strip().splitlines()[2:], **summarise(labels, cells, rows)}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("by_inside", "by_side", "sharp", "defocused", "cells_right")}, indent=1))


if __name__ == "__main__":
    main()
