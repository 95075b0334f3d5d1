"""How many different cells another lab's labelled fields hold: copies of one cell (turned, flipped,
shifted) found by ``fieldset.duplicate_groups``, and what that does to a split by file number.

    python tools/deepbionet_duplicates.py --data ../shared/data --plot benchmarks/results/deepbionet-duplicates.png

Writes ``benchmarks/results/deepbionet-duplicates.json``: the groups, per class; how many cells a split by
file number alone put in both parts; each field's best match with any other field of its class (the
histogram shows the valley that sets ``fieldset.DUPLICATE_NCC``); the shipped model's zero-shot field
mode counted by field and by cell. About 2-3 min on 2 cores.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine

BINS = [0.0, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0001]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                                         / "deepbionet-duplicates.json"))
    ap.add_argument("--plot", default=None, help="a PNG of the largest copy groups, one row each")
    a = ap.parse_args()
    fields = list_images([Path(a.data) / "other-labs" / "deepbionet" / "fields"])
    clf = LiteRTClassifier(default_model(), num_threads=2)  # its scale crops; zero-shot by field and by cell
    spec = clf.input_spec
    cfg = field_lib.FieldConfig(model_rbc_px=field_lib.model_rbc_px(spec), input_px=spec.height)
    crops = list(fieldset.main_cell_crops(fields, cfg))
    scores = fieldset.copy_scores(crops)  # scored once: the groups and each field's best match
    groups = fieldset.groups_from_scores(fields, scores)  # a field without a main cell is a cell of its own
    cell_of = {p: i for i, g in enumerate(groups) for p in g}
    zero_shot = fieldset.score_fields(clf, fields, fieldset.default_config(clf))
    best = {p: 0.0 for p, _ in crops}
    for (p, q), score in scores.items():
        best[p], best[q] = max(best[p], score), max(best[q], score)
    both = sum(1 for g in groups if len({fieldset.file_number(p) % 2 for p in g}) > 1)
    per_class = collections.Counter(fieldset.truth(g[0]) for g in groups)
    fields_per_class = collections.Counter(fieldset.truth(p) for p in fields)
    adapt, report = fieldset.parts_by_number(fields, groups)
    out = {
        "what": "Copies of one cell among DeepBioNet's labelled fields (the field turned, flipped or shifted), "
                "found by comparing main-cell crops (fieldset.duplicate_groups, NCC >= "
                f"{fieldset.DUPLICATE_NCC} of the crop's centre with its red cells, same class only)",
        "command": "python tools/deepbionet_duplicates.py --data ../shared/data --plot "
                   "benchmarks/results/deepbionet-duplicates.png",
        "machine": machine(), "date": datetime.date.today().isoformat(),
        "fields": len(fields), "fields_with_a_main_cell": len(crops), "cells": len(groups),
        "per_class": {k: {"fields": fields_per_class[k], "cells": per_class[k]} for k in sorted(fields_per_class)},
        "fields_per_cell": dict(sorted(collections.Counter(len(g) for g in groups).items())),
        "cells_in_both_parts_of_the_file_number_split": both,
        "split_by_cell": {"adapt": {"fields": len(adapt), "cells": len({cell_of[p] for p in adapt})},
                          "report": {"fields": len(report), "cells": len({cell_of[p] for p in report})}},
        "zero_shot": {"what": "the shipped model, field mode with default options over all the fields (one smoothed "
                              "scale, as celledge watch FOLDER --mode field): fields right, and cells right (each "
                              "cell's fields averaged, then the cells)",
                      "fields_right": round(zero_shot.accuracy, 4),
                      "cells_right": round(fieldset.cell_accuracy(fields, zero_shot, cell_of), 4)},
        "best_match_histogram": {"bins": BINS, "fields": np.histogram(list(best.values()), bins=BINS)[0].tolist()},
        "groups": sorted(([p.relative_to(Path(a.data)).as_posix() for p in g] for g in groups if len(g) > 1),
                         key=len, reverse=True),
        "data": "Shams et al., Blood Cells Mol Dis 2024 (DeepBioNet / Bio-net dataset)",
    }
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "groups"}, indent=1))
    if a.plot and any(len(g) > 1 for g in groups):
        rows = []
        for g in [g for g in sorted(groups, key=len, reverse=True) if len(g) > 1][:5]:
            tiles = [cv2.resize(cv2.imread(str(p)), (160, 120), interpolation=cv2.INTER_AREA) for p in g[:6]]
            tiles += [np.full((120, 160, 3), 255, np.uint8)] * (6 - len(tiles))
            rows.append(np.hstack(tiles))
        cv2.imwrite(a.plot, np.vstack(rows))


if __name__ == "__main__":
    main()
