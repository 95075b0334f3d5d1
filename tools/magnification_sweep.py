"""Does field mode hold at another magnification? Every field resized by a factor, as another objective or camera
would show it, then field mode with default options (the red-cell ruler picks the crop).

    python tools/magnification_sweep.py OUT.json [--model MODEL.tflite] [--factors 0.35,0.5,0.7,1,1.4,2]
                                        [--data ../shared/data]

PBC's 160 fields (the centre cell) and DeepBioNet's 361 labelled fields (the largest white cell), one FieldScale per
folder pass as ``celledge watch FOLDER --mode field`` has it. Per factor: fields right, fields where nothing
white-cell sized was found, and the ruler's median red-cell diameter against the factor times its reading at 1x
(how far the ruler follows the magnification). Nothing is tuned on it: it is a measurement.
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine


def resized(factor: float):
    def go(img: np.ndarray) -> np.ndarray:
        if factor == 1:
            return img
        size = (max(1, round(img.shape[1] * factor)), max(1, round(img.shape[0] * factor)))
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    return go


def sweep(clf, paths, pick: str, factor: float) -> dict:
    cfg = fieldset.default_config(clf)
    t0 = time.perf_counter()
    right = missed = 0
    rbc = []
    per_class: dict[str, list[bool]] = {}
    for p, res in zip(paths, fieldset.classify_fields(fieldset.read_fields(paths, resized(factor)), clf, cfg, pick)):
        hit = res.label == fieldset.truth(p)
        right += hit
        missed += res.main is None
        per_class.setdefault(fieldset.truth(p), []).append(hit)
        if res.scale.get("rbc_px"):
            rbc.append(res.scale["rbc_px"])
    return {"factor": factor, "right": right, "fields": len(paths), "accuracy": round(right / len(paths), 4),
            "no_cell_found": missed, "median_rbc_px": round(float(np.median(rbc)), 2) if rbc else None,
            "per_class": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_class.items())},
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--model", default=None)
    ap.add_argument("--factors", default="0.35,0.5,0.7,1,1.4,2")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    a = ap.parse_args()
    data = Path(a.data)
    factors = [float(f) for f in a.factors.split(",")]
    clf = LiteRTClassifier(a.model or str(default_model()), num_threads=2)
    out = {"what": __doc__.splitlines()[0], "model": a.model or "shipped", "machine": machine(),
           "date": datetime.date.today().isoformat(),
           "command": f"python tools/magnification_sweep.py {a.out}" + (f" --model {a.model}" if a.model else "")
                      + f" --factors {a.factors}"}
    sets = (("pbc_fields", list_images([data / "pbc-fields"]), "centre"),
            ("deepbionet_fields", list_images([data / "other-labs" / "deepbionet" / "fields"]), "largest"))
    for name, paths, pick in sets:
        rows = [sweep(clf, paths, pick, f) for f in factors]
        base = next((r["median_rbc_px"] for r in rows if r["factor"] == 1), None)
        for r in rows:
            if base and r["median_rbc_px"]:
                r["ruler_vs_expected"] = round(r["median_rbc_px"] / (base * r["factor"]), 3)
            print(name, json.dumps({k: v for k, v in r.items() if k != "per_class"}), flush=True)
        out[name] = rows
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
