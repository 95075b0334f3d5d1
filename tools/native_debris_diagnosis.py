"""Why fields fail under native-resolution debris: the model, the detector or the red-cell ruler?

For each corruption at one severity (``scopelite.train.native_corruptions``, sizes in µm from the
folder's red cells), every field is classified by field mode with default options (as
``cellcompress bench --protocol native``) and again with the crop fixed at the clean folder's
scale (the ruler taken out). A field that is right only at the clean scale failed because the
debris fooled the ruler; one wrong both ways failed in the detector (the cell nearest the centre
is not the field's cell) or in the model.

    python tools/native_debris_diagnosis.py ../shared/data/pbc-fields --severity 5 \\
        --out benchmarks/results/native-debris-diagnosis.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from pathlib import Path

import numpy as np


def diagnose(fields: str, model: str | None, severity: int, corruptions: list[str] | None, seed: int = 0) -> dict:
    from scopelite.compress.native import load_fields
    from scopelite.edge.classifier import make_classifier
    from scopelite.edge.fieldset import classify_fields, default_config
    from scopelite.edge.packaged import default_model
    from scopelite.train.native_corruptions import NATIVE_CORRUPTIONS, corrupt_native, px_per_um

    clf = make_classifier(model or default_model(), num_threads=2)
    cfg = default_config(clf)
    fs = load_fields(fields, clf.labels, 0, seed)
    ppu = px_per_um(fs.rbc_px)
    fixed = default_config(clf, crop_size=cfg.crop_for(fs.rbc_px))
    out = {}
    for c in corruptions or list(NATIVE_CORRUPTIONS):
        images = [corrupt_native(im, c, severity, ppu, seed + i) for i, im in enumerate(fs.images)]
        n = {"fields": len(images), "right": 0, "right_at_clean_scale": 0, "wrong_both_ways": 0,
             "wrong_only_with_the_ruler": 0, "picked_off_centre": 0, "rbc_px": []}
        # the same fields twice, side by side: with the ruler (auto) and at the clean folder's scale (known)
        both = zip(classify_fields(images, clf, cfg, "centre"), classify_fields(images, clf, fixed, "centre"))
        for img, truth, (auto, known) in zip(images, fs.truth, both):
            h, w = img.shape[:2]
            m_auto, info = auto.main, auto.scale
            ok_auto, ok_known = auto.label == truth, known.label == truth
            n["right"] += ok_auto
            n["right_at_clean_scale"] += ok_known
            n["wrong_both_ways"] += not ok_auto and not ok_known
            n["wrong_only_with_the_ruler"] += not ok_auto and ok_known
            n["picked_off_centre"] += bool(m_auto is None or np.hypot(m_auto["center"][0] - w / 2,
                                                                        m_auto["center"][1] - h / 2) > fs.rbc_px / 2)
            n["rbc_px"].append(info["rbc_px"])
        n["rbc_px"] = round(float(np.median(n["rbc_px"])), 1)
        out[f"{c}/{severity}"] = n
    return {"model": Path(model or default_model()).name, "fields": fs.description, "n": len(fs.images),
            "clean_rbc_px": round(fs.rbc_px, 2), "severity": severity, "seed": seed, "sets": out}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fields", help="class folders of whole fields, each centred on a cell of its class")
    p.add_argument("--model", default=None, help="a .tflite bundle (default: the shipped model)")
    p.add_argument("--severity", type=int, default=5, choices=range(1, 6))
    p.add_argument("--corruptions", default=None, help="comma-separated (default: all native ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON file to write")
    a = p.parse_args(argv)
    from scopelite.edge.bundle import write_json_atomic
    from scopelite.edge.sysinfo import machine

    res = diagnose(a.fields, a.model, a.severity, a.corruptions.split(",") if a.corruptions else None, a.seed)
    res = {"command": shlex.join(["python", "tools/native_debris_diagnosis.py", *sys.argv[1:]]),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "measured_on": machine(), **res}
    write_json_atomic(a.out, res)
    for k, v in res["sets"].items():
        print(f"{k:>18}: right {v['right']}/{v['fields']}, at the clean scale {v['right_at_clean_scale']}, "
              f"wrong only with the ruler {v['wrong_only_with_the_ruler']}, red cell {v['rbc_px']} px "
              f"(clean {res['clean_rbc_px']})")


if __name__ == "__main__":
    main()
