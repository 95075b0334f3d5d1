"""Validation-only diagnostic: does undoing the class-weight prior raise accuracy?

``celltrain fit`` trains with balanced class weights by default, which tilts decisions toward
rare classes. Dividing a model's probabilities by ``w_c ** tau`` (logit adjustment, Menon et
al. 2021) undoes that tilt for tau = 1. Prints and writes clean and corrupted validation
accuracy (the corrupted copy as ``celltrain choose`` makes it, seed 1) per tau; no test image
is read.

    python tools/class_prior_probe.py runs/X/model.keras [...] --out prior.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    from scopelite.train.corruptions import corrupted_copy
    from scopelite.train.recipe import class_weights
    from scopelite.train.run import heldout_data, load_keras_bundle, predict

    out = {}
    for path in args.models:
        sc, model = load_keras_bundle(path)
        ds, split = heldout_data(sc, path, None)
        train, val = ds.subset(split["train"]), ds.subset(split["val"])
        cw = class_weights(train.labels, len(sc.labels))
        w = np.array([cw[c] for c in range(len(sc.labels))])
        probs = {"val": predict(model, val.images, batch_size=128),
                 "val_corrupted": predict(model, corrupted_copy(val.images, 1)[0], batch_size=128)}
        out[str(path)] = {"class_weights": w.round(3).tolist()}
        for tau in TAUS:
            r = {s: round(100 * float(np.mean((p / w ** tau).argmax(1) == val.labels)), 2) for s, p in probs.items()}
            r["val_score"] = round((r["val"] + r["val_corrupted"]) / 2, 2)
            out[str(path)][f"tau{tau}"] = r
            print(path, f"tau {tau}", r, flush=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
