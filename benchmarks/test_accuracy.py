"""Accuracy runs (opt-in: they need real data), through the same code the user runs.

    pytest benchmarks/test_accuracy.py --accuracy [--model M.tflite] [--data ../shared/data]

* field mode on whole PBC microscope fields (pbc-fields/<class>/*.jpg): detect, crop, classify;
  the largest detection must carry the folder's class; writes a PNG of annotated fields;
* a model bundle on a class-folder dataset (pbc96), clean and under the corruption suite.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

RESULTS = Path(__file__).parent / "results"


@pytest.fixture(scope="module")
def data_root(request):
    if not request.config.getoption("--accuracy"):
        pytest.skip("accuracy runs are opt-in: --accuracy [--data DIR]")
    root = Path(request.config.getoption("--data"))
    if not root.is_dir():
        pytest.skip(f"no data at {root}")
    return root


@pytest.fixture(scope="module")
def clf(request, data_root):
    from scopelite.edge.classifier import LiteRTClassifier
    from scopelite.edge.packaged import default_model

    return LiteRTClassifier(request.config.getoption("--model") or default_model(), num_threads=2)


@pytest.mark.data
def test_field_mode_on_real_fields(data_root, clf, record):
    from scopelite.edge import field as field_lib
    from scopelite.edge.sources import list_images, read_image_rgb
    from scopelite.edge.watch import classify_field

    folder = data_root / "pbc-fields"
    if not folder.is_dir():
        pytest.skip(f"no {folder}")
    cfg = field_lib.FieldConfig(crop_size=360)  # PBC fields: the 96 px crops were 360 px squares
    rows, tiles = [], []
    for path in list_images([folder]):
        truth = path.parent.name
        img = read_image_rgb(path)
        cells = classify_field(img, clf, cfg, min_score=0.0)
        # PBC fields are centred on the white cell: take the detection nearest the centre
        h, w = img.shape[:2]
        main = min(cells, key=lambda c: np.hypot(c["center"][0] - w / 2, c["center"][1] - h / 2)) if cells else None
        rows.append({"file": f"{truth}/{path.name}", "truth": truth, "cells": len(cells),
                     "label": main["best"] if main else None, "score": main["score"] if main else None})
        if sum(r["truth"] == truth for r in rows) <= 2:
            vis = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            for c in cells:
                x0, y0 = max(int(c["center"][0]) - 45, 0), max(int(c["center"][1]) - 45, 0)
                cv2.rectangle(vis, (x0, y0), (x0 + 90, y0 + 90), (40, 200, 40), 2)
            ok = main and main["best"] == truth
            cv2.putText(vis, f"{main['best'] if main else 'none'} {main['score'] if main else 0:.2f}", (5, 20),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 140, 0) if ok else (0, 0, 200), 2, cv2.LINE_AA)
            cv2.putText(vis, f"true: {truth}", (5, 350), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(cv2.resize(vis, (240, 242)))
    acc = float(np.mean([r["label"] == r["truth"] for r in rows]))
    detected = float(np.mean([r["cells"] > 0 for r in rows]))
    RESULTS.mkdir(exist_ok=True)
    grid = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles) - len(tiles) % 4, 4)]
    cv2.imwrite(str(RESULTS / "pbc-fields-field-mode.png"), np.vstack(grid))
    import datetime

    from scopelite.edge.sysinfo import machine

    (RESULTS / "pbc-fields-field-mode.json").write_text(json.dumps(
        {"command": "pytest benchmarks/test_accuracy.py --accuracy -k fields", "machine": machine(),
         "date": datetime.date.today().isoformat(),
         "note": "pbc-fields are original PBC images; their crops may be in pbc96, so the model may have "
                 "seen these cells in training: this checks detect->crop->classify, not generalisation",
         "fields": len(rows), "centre_cell_accuracy": acc, "fields_with_a_detection": detected,
         "crop_size": 360, "model": str(clf.path), "rows": rows}, indent=1) + "\n")
    record.add("field mode on real PBC fields", centre_cell_accuracy=round(acc, 4),
               fields_with_detection=round(detected, 4), fields=len(rows))
    assert detected >= 0.95


@pytest.mark.data
def test_bundle_accuracy_clean_and_corrupted(data_root, clf, record):
    from scopelite.train.corruptions import corrupted_copy
    from scopelite.train.data import load_folders

    ds = load_folders(data_root / "pbc96", clf.input_spec.height)
    idx = np.random.default_rng(0).permutation(len(ds))[:2000]  # a fixed sample (it may include training images)
    x, y = ds.images[idx], ds.labels[idx]
    clean = float((clf.classify(x).argmax(1) == y).mean())
    corrupted = float((clf.classify(corrupted_copy(x, 0)[0]).argmax(1) == y).mean())
    record.add("bundle on pbc96 sample (2000, seed 0)", clean=round(clean, 4), corrupted=round(corrupted, 4))
    assert clean > 0.5
