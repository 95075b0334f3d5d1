"""Which of PBC's 160 fields field mode gets wrong, and which part of the PBC split each field is.

    python tools/pbc_fields_breakdown.py [--data ../shared/data] [--model MODEL.tflite] [--out benchmarks/results]

Writes OUT/pbc-fields-misses.json (the fields whose centre cell's best class is not the folder's, with its top 3,
the white cells found and the crop) and OUT/pbc-fields-in-split.json (each field looked up in the PBC split every
pbc run since the first shares: pbc96, exact duplicates left out, stratified 80/10/10 with seed 0, rebuilt here as
``celltrain fit`` builds it; the misses per part). Field mode as ``benchmarks/test_accuracy.py -k real_fields``
runs it: the 160 fields in one run (the ruler smoothed over them), default options, the detection nearest the
centre, its best class (``min_score`` 0; watch prints a low-scoring one as ``"label": "uncertain"``, its class in
``best``). About a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine
from scopelite.train import data as data_lib


def misses(data: Path, clf) -> tuple[list[dict], list[str]]:
    """The wrong fields (a record each) and every field's ``class/file`` name, in the order read."""
    paths = list_images([data / "pbc-fields"])
    wrong, names = [], []
    for path, res in zip(paths, fieldset.classify_fields(fieldset.read_fields(paths), clf,
                                                         fieldset.default_config(clf), "centre")):
        name = f"{fieldset.truth(path)}/{path.name}"
        names.append(name)
        if res.label == fieldset.truth(path):
            continue
        rec = {"field": name, "called": res.label, "white_cells_found": sum(c["kind"] == "white" for c in res.cells)}
        if res.main is not None:
            order = np.argsort(res.main["scores"])[::-1][:3]
            rec.update(top3=[[clf.labels[i], round(float(res.main["scores"][i]), 3)] for i in order],
                       picked_centre=[round(float(v), 1) for v in res.main["center"]], crop_box=res.main["box"],
                       crop=res.scale["crop"], rbc_px=res.scale["rbc_px"])
        wrong.append(rec)
    return wrong, names


def pbc_split(data: Path) -> tuple[dict[str, str], dict[str, int], str]:
    """``class/file`` -> its part (train / val / test) in the PBC split, the parts' sizes, and the split's identity
    (``data.split_identity``'s hash of the classes and each part's images)."""
    ds = data_lib.load(str(data / "pbc96"), 96, 0, 0)
    split = data_lib.stratified_split(ds.labels, (0.8, 0.1, 0.1), 0, exclude=data_lib.exact_duplicates(ds.images))
    part = {ds.ids[i]: name for name, idx in split.items() for i in idx}
    with tempfile.TemporaryDirectory() as d:  # split_identity reads a split.json: one written aside
        data_lib.save_split(Path(d) / "split.json", ds, split, 0)
        identity = data_lib.split_identity(Path(d) / "split.json")
    return part, {k: len(v) for k, v in split.items()}, identity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--model", default=None, help="a .tflite (default: the packaged model)")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    data, out = Path(a.data), Path(a.out)
    if not (data / "pbc-fields").is_dir() or not (data / "pbc96").is_dir():
        sys.exit(f"Error: {data} holds no pbc-fields/ and pbc96/ (give --data, the folder ../shared/data)")
    model = a.model or default_model()
    clf = LiteRTClassifier(model, num_threads=2)
    command = "python tools/pbc_fields_breakdown.py " + " ".join(sys.argv[1:])
    wrong, names = misses(data, clf)
    stamp = {"command": command.strip(), "model": str(model), "machine": machine(),
             "date": datetime.date.today().isoformat()}
    (out / "pbc-fields-misses.json").write_text(json.dumps({
        "what": "the PBC fields field mode gets wrong with default options: the 160 fields in one run (the ruler "
                "smoothed over them), the detection nearest the centre, its best class (min_score 0)",
        **stamp, "right": len(names) - len(wrong), "fields": len(names), "misses": wrong,
        "note": "One run over all 160 fields, as benchmarks/test_accuracy.py -k real_fields: one class folder at a "
                "time smooths the ruler over other frames and crops some cells otherwise. Seen by eye (session 16, "
                "the same five fields): four are the model's confusions on one white cell (IG as neutrophil, "
                "monocyte as IG); neutrophil BNE_104344.jpg holds two white cells, a lymphocyte above and a "
                "neutrophil below, neither centred, and the detection nearest the centre is the lymphocyte, called "
                "lymphocyte: the pick rule, not the model. Data: Acevedo et al. 2020."}, indent=1) + "\n")
    part, sizes, identity = pbc_split(data)
    stem = {Path(k).name: v for k, v in part.items()}  # pbc96 keeps the original file names
    missed = {m["field"] for m in wrong}
    parts: dict[str, dict] = {p: {"fields": 0, "right": 0, "missed": []} for p in ("train", "val", "test")}
    unknown = []
    for name in names:
        p = stem.get(Path(name).name)
        if p is None:
            unknown.append(name)
            continue
        parts[p]["fields"] += 1
        if name in missed:
            parts[p]["missed"].append(name)
        else:
            parts[p]["right"] += 1
    (out / "pbc-fields-in-split.json").write_text(json.dumps({
        "what": "which part of the PBC split (pbc96, exact duplicates left out, stratified 80/10/10, seed 0, rebuilt "
                "as celltrain fit builds it) each of the 160 PBC fields is, with field mode's misses per part",
        **stamp, "split_sizes": sizes, "split_identity": identity, "parts": parts, "not_in_pbc96": unknown,
        "note": "pbc-fields holds the full-size originals of pbc96 crops, so most are training images of the "
                "shipped model. Data: Acevedo et al. 2020."}, indent=1) + "\n")
    seen = parts["val"]["fields"] + parts["test"]["fields"]
    print(f"right {len(names) - len(wrong)} of {len(names)}; split {sizes}; never trained on: "
          f"{parts['val']['right'] + parts['test']['right']} of {seen}")


if __name__ == "__main__":
    main()
