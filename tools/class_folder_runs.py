"""Field mode on each class folder of a labelled-fields folder, each in a run of its own, as the issue's command
reads them (``celledge watch ../shared/data/pbc-fields/<class> --mode field``), beside one run over all the classes.

    python tools/class_folder_runs.py [--data ../shared/data] [--model MODEL.tflite] [--out OUT.json]

The ruler is smoothed over the fields of a run, so a class folder read alone crops some cells otherwise than the one
run over all the classes that benchmarks/test_accuracy.py measures. Right: the field's cell (PBC: the detection
nearest the centre; DeepBioNet: the largest white cell) has the folder's class as its best class (``best``), or also
scores ``--min-score`` (0.5) or more, so that watch prints it as its ``label`` rather than "uncertain".
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.config import WatchConfig
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine

SETS = {"pbc-fields": "centre", "other-labs/deepbionet/fields": "largest"}


def right(paths, clf, pick: str) -> dict:
    """Field mode over ``paths`` in one run: fields, right by best class, right by watch's label."""
    floor = WatchConfig().min_score
    res = list(fieldset.classify_fields(fieldset.read_fields(paths), clf, fieldset.default_config(clf), pick))
    truth = [fieldset.truth(p) for p in paths]
    return {"fields": len(paths), "right_by_best": sum(r.label == t for r, t in zip(res, truth)),
            "right_by_label": sum(r.label == t and r.main["score"] >= floor for r, t in zip(res, truth))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--model", default=None, help="a .tflite (default: the packaged model)")
    ap.add_argument("--out", default="benchmarks/results/class-folder-runs.json")
    a = ap.parse_args()
    model = a.model or default_model()
    clf = LiteRTClassifier(model, num_threads=2)
    out = {"what": __doc__.splitlines()[0], "command": "python tools/class_folder_runs.py " + " ".join(sys.argv[1:]),
           "model": str(model), "machine": machine(), "date": datetime.date.today().isoformat(), "sets": {}}
    for rel, pick in SETS.items():
        root = Path(a.data) / rel
        if not root.is_dir():
            sys.exit(f"Error: no {root} (give --data, the folder ../shared/data)")
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        alone = {f.name: right(list_images([f]), clf, pick) for f in folders}
        total = {k: sum(v[k] for v in alone.values()) for k in ("fields", "right_by_best", "right_by_label")}
        out["sets"][rel] = {"pick": pick, "one_run_over_all": right(list_images([root]), clf, pick),
                            "each_class_folder_alone": {"total": total, **alone}}
        one = out["sets"][rel]["one_run_over_all"]
        print(f"{rel}: one run {one['right_by_best']}/{one['fields']} by best, {one['right_by_label']} by label; "
              f"each class folder alone {total['right_by_best']} by best, {total['right_by_label']} by label")
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
