"""How faithfully `--weights MODEL.tflite` rebuilds a float Keras model from an int8 one.

    python tools/tflite_roundtrip.py edge/models/bloodcell_int8.tflite ../shared/data/pbc96 \
        --n 256 --out docs/runs/tflite-weights-roundtrip.json

Draws ``--n`` crops (seeded) from a class-folder dataset, runs the int8 model and the rebuilt float model
(before and after the BatchNorm statistics are re-measured), and reports how often they pick the same
class and how far their probabilities are apart. Agreement, not accuracy: no label is used.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import cv2

    from scopelite.edge.bundle import load_sidecar
    from scopelite.edge.classifier import LiteRTClassifier
    from scopelite.train import from_tflite
    from scopelite.train import model as model_lib

    sc = load_sidecar(args.model)
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    pick = np.random.default_rng(args.seed).permutation(len(files))[: args.n]
    size = (sc.input.width, sc.input.height)
    images = np.stack([cv2.resize(cv2.cvtColor(cv2.imread(str(files[i])), cv2.COLOR_BGR2RGB), size,
                                  interpolation=cv2.INTER_AREA) for i in pick])

    q = LiteRTClassifier(args.model).classify(images)

    t0 = time.time()
    m = model_lib.build("efficientnetv2b0", sc.input.height, len(sc.labels))
    layers = model_lib.copy_weights_from(m, str(args.model))
    load_s = time.time() - t0
    p0 = m.predict(images.astype(np.float32), verbose=0)
    bns = from_tflite.restandardise_batchnorm(m, images[: min(128, len(images))])
    p1 = m.predict(images.astype(np.float32), verbose=0)

    def compare(p):
        return {"same_class": float((p.argmax(1) == q.argmax(1)).mean()),
                "mean_abs_prob_diff": float(np.abs(p - q).mean()), "max_abs_prob_diff": float(np.abs(p - q).max())}

    res = {
        "what": "int8 TFLite model vs the float Keras model rebuilt from it by celltrain fit --weights MODEL.tflite",
        "command": "python " + " ".join(sys.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "model": str(args.model), "data": str(args.data), "n_images": len(images), "seed": args.seed,
        "layers_set": layers, "batchnorm_layers_restandardised": bns, "load_seconds": round(load_s, 2),
        "before_restandardise": compare(p0), "after_restandardise": compare(p1),
        "restandardise_changed_outputs_by": float(np.abs(p1 - p0).max()),
    }
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
