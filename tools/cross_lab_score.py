"""Which candidate model to ship: field mode with default options on PBC's fields and on DeepBioNet's parts.

    python tools/cross_lab_score.py MODEL.tflite OUT.json [--data ../shared/data]     (MODEL: shipped = the packaged)

The scoring every model decision since session 16 used (it was a session's scratch file, kept in the run records'
``field_mode_probe_code``): PBC's 160 fields (the centre cell), then DeepBioNet's labelled fields (the largest
white cell) in its two parts, split by cell as tools/few_shot.py does (adapt: 187 fields, the part that decides;
report: 174) and all 361, per class and per microscope set-up. The split is made with the shipped model's crops
whatever MODEL is, so every candidate is judged on the same fields. Prints the right/fields of each part.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
from pathlib import Path

import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    a = ap.parse_args()
    data = Path(a.data)
    model = str(default_model()) if a.model == "shipped" else a.model
    clf = LiteRTClassifier(model, num_threads=2)
    cfg = fieldset.default_config(clf)
    out = {"model": model, "machine": machine(), "date": datetime.date.today().isoformat(),
           "command": f"python tools/cross_lab_score.py {a.model} {a.out}"}
    pbc = list_images([data / "pbc-fields"])
    s = fieldset.score_fields(clf, pbc, cfg, pick="centre")
    out["pbc_fields"] = {"right": sum(sum(v) for v in s.hits.values()), "fields": s.fields,
                         "confusion": {f"{t} -> {p}": n for (t, p), n in sorted(s.confusion.items(), key=str) if t != p}}
    dbn = list_images([data / "other-labs" / "deepbionet" / "fields"])
    ship = LiteRTClassifier(default_model(), num_threads=2)
    scfg = field_lib.FieldConfig(model_rbc_px=field_lib.model_rbc_px(ship.input_spec), input_px=ship.input_spec.height)
    groups = fieldset.groups_from_scores(dbn, fieldset.copy_scores(fieldset.main_cell_crops(dbn, scfg)))
    adapt, report = fieldset.parts_by_number(dbn, groups)
    setup_of, _ = fieldset.background_setups(dbn)
    for name, paths in (("deepbionet_adapt", adapt), ("deepbionet_report", report), ("deepbionet_all", dbn)):
        s = fieldset.score_fields(clf, paths, cfg, pick="largest")
        by = collections.defaultdict(lambda: collections.defaultdict(list))
        for p, hit in zip(paths, fieldset.field_hits(paths, s)):
            by[fieldset.SETUP_NAMES[setup_of[Path(p)]]][fieldset.truth(p)].append(hit)
        out[name] = {"right": sum(sum(v) for v in s.hits.values()), "fields": s.fields,
                     "accuracy": round(s.accuracy, 4),
                     "per_class": {k: round(v, 4) for k, v in sorted(s.per_class.items())},
                     "confusion": {f"{t} -> {p}": n for (t, p), n in sorted(s.confusion.items(), key=str)},
                     "by_setup": {g: {k: round(float(np.mean(v)), 4) for k, v in sorted(h.items())}
                                  for g, h in sorted(by.items())}}
    print(json.dumps({k: [v["right"], v["fields"]] for k, v in out.items() if isinstance(v, dict) and "right" in v}))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
