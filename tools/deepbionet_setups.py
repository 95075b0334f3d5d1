"""Which microscope set-ups another lab's labelled fields come from, and how much their background
colour alone tells about the class (a shortcut an adapted model can learn).

    python tools/deepbionet_setups.py --data ../shared/data --plot benchmarks/results/deepbionet-setups.png

Each field's background colour is put in one of two groups by 2-means on its chromaticity
(``fieldset.background_setups``); per group: the fields of each class, the frame's own red-cell ruler, and the shipped model's
zero-shot field mode. Then the shortcut baseline: a 5-nearest-neighbour vote on background colour alone,
fitted on the few-shot curve's adapt part and scored on its report part (split by cell, as
``tools/few_shot.py``). Writes ``benchmarks/results/deepbionet-setups.json``. About 2 min on 2 cores.
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
from scopelite.train.audit import nearest_vote


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                                         / "deepbionet-setups.json"))
    ap.add_argument("--plot", default=None, help="a PNG: each field's background chromaticity, coloured by class")
    a = ap.parse_args()
    fields = list_images([Path(a.data) / "other-labs" / "deepbionet" / "fields"])
    clf = LiteRTClassifier(default_model(), num_threads=2)
    spec = clf.input_spec
    cfg = field_lib.FieldConfig(model_rbc_px=field_lib.model_rbc_px(spec), input_px=spec.height)

    setup_of, chroma = fieldset.background_setups(fields)
    group = [setup_of[p] for p in fields]
    results = list(fieldset.classify_fields(fieldset.read_fields(fields), clf, fieldset.default_config(clf)))
    classes = [fieldset.truth(p) for p in fields]

    setups = {}
    for g in (0, 1):
        idx = [i for i in range(len(fields)) if group[i] == g]
        rulers = [results[i].scale.get("frame_rbc_px") for i in idx]
        rulers = [r for r in rulers if r]
        per_class = {}
        for c in sorted(set(classes)):
            ci = [i for i in idx if classes[i] == c]
            if ci:
                per_class[c] = {"fields": len(ci),
                                "zero_shot_right": round(float(np.mean([results[i].label == c for i in ci])), 4)}
        setups[fieldset.SETUP_NAMES[g]] = {
            "background_chromaticity_median": np.median(chroma[idx], axis=0).round(4).tolist(),
            "fields": len(idx),
            "frame_rbc_px_median": round(float(np.median(rulers)), 1) if rulers else None,
            "zero_shot_right": round(float(np.mean([results[i].label == classes[i] for i in idx])), 4),
            "per_class": per_class,
        }

    crops = list(fieldset.main_cell_crops(fields, cfg))
    groups = fieldset.groups_from_scores(fields, fieldset.copy_scores(crops))
    adapt, report = fieldset.parts_by_number(fields, groups)
    index = {p: i for i, p in enumerate(fields)}
    train, test = chroma[[index[p] for p in adapt]], chroma[[index[p] for p in report]]
    guess = nearest_vote(np.linalg.norm(test[:, None] - train[None], axis=2), [fieldset.truth(p) for p in adapt])
    truth_r = [fieldset.truth(p) for p in report]
    base_per_class = {c: round(float(np.mean([g == t for g, t in zip(guess, truth_r) if t == c])), 4)
                      for c in sorted(set(truth_r))}
    out = {
        "what": "DeepBioNet's labelled fields grouped by background colour (fieldset.background_setups: 2-means on chromaticity): "
                "the set-ups they come from, each one's red-cell ruler and the shipped model's zero-shot field "
                "mode; and how well background colour alone predicts the class (5-NN on chromaticity, adapt "
                "part -> report part, split by cell)",
        "command": "python tools/deepbionet_setups.py --data ../shared/data --plot "
                   "benchmarks/results/deepbionet-setups.png",
        "machine": machine(), "date": datetime.date.today().isoformat(),
        "fields": len(fields),
        "setups": setups,
        "background_only_baseline": {
            "adapt_fields": len(adapt), "report_fields": len(report),
            "report_accuracy": round(float(np.mean([g == t for g, t in zip(guess, truth_r)])), 4),
            "report_per_class": base_per_class,
            "confusion": {f"{t} -> {g}": n for (t, g), n in sorted(collections.Counter(zip(truth_r, guess)).items())},
        },
        "data": "Shams et al., Blood Cells Mol Dis 2024 (DeepBioNet / Bio-net dataset)",
    }
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    if a.plot:
        plot(chroma, classes, a.plot)


def plot(chroma: np.ndarray, classes: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for c in sorted(set(classes)):
        m = np.array([k == c for k in classes])
        ax.scatter(chroma[m, 1], chroma[m, 2], s=14, alpha=0.7, label=f"{c} ({m.sum()})")
    ax.set_xlabel("background green share")
    ax.set_ylabel("background blue share")
    ax.set_title("DeepBioNet fields: background colour by class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
