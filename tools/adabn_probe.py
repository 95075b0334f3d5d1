"""Probe: does re-measuring BatchNorm statistics on another lab's unlabelled cells (AdaBN) help?

    python tools/adabn_probe.py --data ../shared/data --save /tmp/adabn-adapt.keras

Crops: field mode's main-cell crop of every DeepBioNet field (adapt part: file number even; report
part: odd), as ``tools/few_shot.py`` exports them. The shipped int8 model is rebuilt as a float Keras
model; scored (float, argmax) on both parts:
- ``identity``: as rebuilt (its BatchNorm layers hold identity statistics, the real ones folded in);
- ``identity+adapt``: those identity statistics replaced by the adapt crops' own (no source statistics);
- ``source``: statistics restandardised on 512 PBC crops (the function unchanged: the reference);
- ``source+adapt``: then re-measured on the adapt crops (proper AdaBN; what ``--save`` writes, the
  weights ``tools/few_shot.py --weights`` can start the few-shot recipe from).
Each score: fields right, balanced accuracy (mean of per-class recalls), and the differential's error:
the L1 distance in points between the predicted and the true class shares of the part.
Nothing from the report part is used but for scoring. Recorded: benchmarks/results/few-shot-adabn.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--save", default=None, help="write the source+adapt model here (.keras)")
    a = ap.parse_args()
    from scopelite.train import model as model_lib  # noqa: PLC0415 (TensorFlow after the edge imports)
    from scopelite.train.average import recalibrate_batchnorm  # noqa: PLC0415
    from scopelite.train.from_tflite import restandardise_batchnorm, sidecar_labels  # noqa: PLC0415

    shipped = str(default_model())
    spec = LiteRTClassifier(shipped, num_threads=2).input_spec
    cfg = field_lib.FieldConfig(model_rbc_px=spec.rbc_px, input_px=spec.height)
    labels = sidecar_labels(shipped)

    def crops(paths):
        found = list(fieldset.main_cell_crops(paths, cfg))
        return (np.stack([c for _, c in found]).astype(np.float32),
                np.array([labels.index(fieldset.truth(p)) for p, _ in found]))

    adapt, report = fieldset.parts_by_number(list_images([Path(a.data) / "other-labs" / "deepbionet" / "fields"]))
    xa, ya = crops(adapt)
    xr, yr = crops(report)
    pbc = sorted((Path(a.data) / "pbc96").glob("*/*"))
    pick = np.random.default_rng(0).permutation(len(pbc))[:512]
    xp = np.stack([cv2.cvtColor(cv2.resize(cv2.imread(str(pbc[i])), (spec.width, spec.height)), cv2.COLOR_BGR2RGB)
                   for i in pick]).astype(np.float32)
    model = model_lib.build("efficientnetv2b0", spec.height, len(labels), weights=shipped)

    def score(x, y):
        p = model.predict(x, verbose=0, batch_size=32).argmax(1)
        per = {labels[c]: round(float((p[y == c] == c).mean()), 4) for c in sorted(set(y.tolist()))}
        shares = np.bincount(p, minlength=len(labels)) - np.bincount(y, minlength=len(labels))
        return {"accuracy": round(float((p == y).mean()), 4), "balanced": round(float(np.mean(list(per.values()))), 4),
                "differential_l1_pt": round(float(100 * np.abs(shares).sum() / len(y)), 1), "per_class": per}

    def adabn(x):  # the adapt crops in 11 seeded batches of 16-17 (no small last batch)
        idx = np.random.default_rng(0).permutation(len(x))
        recalibrate_batchnorm(model, (x[np.sort(c)] for c in np.array_split(idx, max(1, len(x) // 16))))

    rows = {}
    identity = model.get_weights()
    rows["identity"] = {"report": score(xr, yr), "adapt": score(xa, ya)}
    adabn(xa)
    rows["identity+adapt"] = {"report": score(xr, yr), "adapt": score(xa, ya)}
    model.set_weights(identity)
    restandardise_batchnorm(model, xp, 32)
    rows["source"] = {"report": score(xr, yr), "adapt": score(xa, ya)}
    adabn(xa)
    rows["source+adapt"] = {"report": score(xr, yr), "adapt": score(xa, ya)}
    if a.save:
        model.save(a.save)
    print(json.dumps({"adapt_crops": len(xa), "report_crops": len(xr), "pbc_crops": len(xp), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
