"""Accuracy runs (opt-in: they need real data), through the same code the user runs.

    pytest benchmarks/test_accuracy.py --accuracy [--model M.tflite] [--data ../shared/data]

* field mode on whole PBC microscope fields (pbc-fields/<class>/*.jpg) and on another lab's fields
  (other-labs/deepbionet/fields), default options: detect, measure the scale, crop, classify;
  writes JSON and a PNG of annotated fields;
* white-cell detection and the red-cell ruler against the DeepBioNet boxes;
* a model bundle on a class-folder dataset (pbc96), clean and under the corruption suite.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from scopelite.edge.config import WatchConfig

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


def _field_mode(folder: Path, clf, cfg, pick: str) -> tuple[list[dict], list[np.ndarray]]:
    """Field mode over ``folder/<class>/*.jpg`` as the daemon runs it (``scopelite.edge.fieldset``); which
    detection is the field's cell: ``centre`` (PBC: fields are centred on it) or ``largest`` (the largest
    white-cell-sized detection)."""
    from scopelite.edge import fieldset
    from scopelite.edge.sources import list_images, read_image_rgb

    rows, tiles = [], []
    paths = list_images([folder])
    for path, res in zip(paths, fieldset.classify_fields(fieldset.read_fields(paths), clf, cfg, pick)):
        truth, cells, main = fieldset.truth(path), res.cells, res.main
        rows.append({"file": f"{truth}/{path.name}", "truth": truth, "cells": len(cells),
                     "white_cells": sum(c["kind"] == "white" for c in cells), "crop": res.scale["crop"],
                     "rbc_px": res.scale["rbc_px"], "label": res.label,
                     "score": main["score"] if main else None})
        if sum(r["truth"] == truth for r in rows) <= 2:
            img = read_image_rgb(path)
            h, w = img.shape[:2]
            vis = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            for c in cells:
                x0, y0, x1, y1 = c["box"]
                cv2.rectangle(vis, (x0, y0), (x1, y1), (40, 200, 40) if c is main else (200, 200, 200), 2)
            ok = main and main["best"] == truth
            cv2.putText(vis, f"{main['best'] if main else 'none'} {main['score'] if main else 0:.2f}", (5, 22),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 140, 0) if ok else (0, 0, 200), 2, cv2.LINE_AA)
            cv2.putText(vis, f"true: {truth}", (5, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2, cv2.LINE_AA)
            tiles.append(cv2.resize(vis, (240, int(240 * h / w))))
    return rows, tiles


def _summary(rows: list[dict]) -> dict:
    classes = sorted({r["truth"] for r in rows})
    floor = WatchConfig().min_score  # watch prints a cell scoring under it as "uncertain" (its class in "best")
    return {"fields": len(rows), "accuracy": float(np.mean([r["label"] == r["truth"] for r in rows])),
            "accuracy_over_min_score": float(np.mean([r["label"] == r["truth"] and r["score"] >= floor
                                                      for r in rows])),
            "per_class": {c: round(float(np.mean([r["label"] == r["truth"] for r in rows if r["truth"] == c])), 4)
                          for c in classes},
            "fields_with_a_detection": float(np.mean([r["cells"] > 0 for r in rows])),
            "median_crop": float(np.median([r["crop"] for r in rows]))}


def _write(request, name: str, payload: dict, tiles: list[np.ndarray]) -> None:
    """benchmarks/results/NAME.json (+ .png of the fields), unless --no-write: a run with --model MINE.tflite
    then leaves the shipped model's recorded figures as they are."""
    import datetime

    if request.config.getoption("--no-write"):
        return

    from scopelite.edge.sysinfo import machine

    RESULTS.mkdir(exist_ok=True)
    if tiles:
        tiles = [cv2.resize(t, tiles[0].shape[1::-1]) for t in tiles]  # 360x360 and 360x363 fields
        grid = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles) - len(tiles) % 4, 4)]
        cv2.imwrite(str(RESULTS / f"{name}.png"), np.vstack(grid))
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"machine": machine(), "date": datetime.date.today().isoformat(), **payload}, indent=1) + "\n")


@pytest.mark.data
def test_field_mode_on_real_fields(data_root, clf, record, request):
    """PBC's own fields with default options (crop size measured from red cells) and at the hand-set 360."""
    from scopelite.edge.fieldset import default_config

    folder = data_root / "pbc-fields"
    if not folder.is_dir():
        pytest.skip(f"no {folder}")
    rows, tiles = _field_mode(folder, clf, default_config(clf), "centre")
    fixed_rows, _ = _field_mode(folder, clf, default_config(clf, crop_size=360), "centre")
    res = {"default_options": _summary(rows), "crop_size_360": _summary(fixed_rows)}
    _write(request, "pbc-fields-field-mode", {
        "command": "pytest benchmarks/test_accuracy.py --accuracy -k real_fields",
        "note": "pbc-fields are original PBC images; their crops may be in pbc96, so the model may have seen "
                "these cells in training: this checks find -> scale -> crop -> classify, not generalisation. "
                "The detector's thresholds were chosen on these fields (and on generated fields and the even "
                "half of the DeepBioNet detection set).",
        "model": str(clf.path), **res, "rows": rows}, tiles)
    record.add("field mode, PBC fields, default options", accuracy=round(res["default_options"]["accuracy"], 4),
               crop_360=round(res["crop_size_360"]["accuracy"], 4))
    assert res["default_options"]["fields_with_a_detection"] >= 0.95
    if not request.config.getoption("--model"):  # the shipped model recorded 96.9 % (2026-12-01): 3 fields below
        assert res["default_options"]["accuracy"] >= 0.95, res["default_options"]


@pytest.mark.data
def test_field_mode_on_another_lab(data_root, clf, record, request):
    """DeepBioNet's labelled fields (another lab, microscope, camera and stain), zero-shot, default options."""
    from scopelite.edge.fieldset import default_config

    folder = data_root / "other-labs" / "deepbionet" / "fields"
    if not folder.is_dir():
        pytest.skip(f"no {folder}")
    rows, tiles = _field_mode(folder, clf, default_config(clf), "largest")
    res = _summary(rows)
    res["white_cells_per_field"] = float(np.mean([r["white_cells"] for r in rows]))
    _write(request, "deepbionet-fields-field-mode", {
        "command": "pytest benchmarks/test_accuracy.py --accuracy -k field_mode_on_another_lab",
        "note": "zero-shot: nothing from these fields was used for training, tuning or thresholds. The field's "
                "cell is the largest white-cell-sized detection. Data: Shams et al., Blood Cells Mol Dis 2024.",
        "model": str(clf.path), **res, "rows": rows}, tiles)
    record.add("field mode, DeepBioNet fields, zero-shot", accuracy=round(res["accuracy"], 4))
    assert res["fields_with_a_detection"] >= 0.95
    if not request.config.getoption("--model"):  # the shipped model recorded 62.0 % (2026-12-01): a band of 5 points
        assert res["accuracy"] >= 0.57, res


@pytest.mark.data
def test_detection_and_scale_on_another_lab(data_root, record, request):
    """White-cell detection and the red-cell ruler against DeepBioNet's boxes (files at odd positions in sorted order: report half)."""
    from scopelite.edge import field as field_lib
    from scopelite.edge.illumination import flatten
    from scopelite.edge.scale import estimate_rbc_diameter
    from scopelite.edge.sources import read_image_rgb
    from scopelite.edge.stain import stain_layers

    det_dir = data_root / "other-labs" / "deepbionet" / "detection"
    if not det_dir.is_dir():
        pytest.skip(f"no {det_dir}")
    boxes = json.loads((det_dir / "boxes.json").read_text())
    out: dict = {}
    for half, name in ((0, "dev_even"), (1, "report_odd")):
        truth = found = n_det = tp = 0
        errors, skipped, no_scale = [], [], 0
        for k, (f, bx) in enumerate(sorted(boxes.items())):
            if k % 2 != half:
                continue
            wbc = [b["box"] for b in bx if b["label"] == "WBC"]
            if len(wbc) > 10:  # two files box every red cell as "WBC": an annotation error, left out
                skipped.append(f)
                continue
            img = flatten(read_image_rgb(det_dir / "images" / f))[0]  # as field mode reads a frame (uneven light)
            layers = stain_layers(img)
            est = estimate_rbc_diameter(img, layers)
            rbc = [b["box"] for b in bx if b["label"] == "RBC"]
            whole = [((b[2] - b[0]) + (b[3] - b[1])) / 2 for b in rbc
                     if b[0] > 1 and b[1] > 1 and b[2] < img.shape[1] - 1 and b[3] < img.shape[0] - 1]
            if est.diameter_px is None:
                no_scale += 1
            elif len(whole) >= 3:
                errors.append(est.diameter_px / float(np.median(whole)) - 1)
            dets = [d for d in field_lib.detect(img, est.diameter_px, layers) if d.kind == "white"]
            inside = lambda d, b: b[0] <= d.x <= b[2] and b[1] <= d.y <= b[3]  # noqa: E731
            truth += len(wbc)
            found += sum(any(inside(d, b) for d in dets) for b in wbc)
            n_det += len(dets)
            tp += sum(any(inside(d, b) for b in wbc) for d in dets)
        e = np.array(errors)
        out[name] = {"white_cells": truth, "recall": found / max(truth, 1), "precision": tp / max(n_det, 1),
                     "detections": n_det, "left_out_files": skipped,
                     "scale": {"fields": len(e), "no_estimate": no_scale, "median_relative_error": float(np.median(e)),
                               "median_abs_relative_error": float(np.median(np.abs(e))),
                               "p90_abs_relative_error": float(np.percentile(np.abs(e), 90))}}
    pbc = sorted((data_root / "pbc-fields").glob("*/*.jpg"))
    d = np.array([estimate_rbc_diameter(read_image_rgb(p)).diameter_px or np.nan for p in pbc])
    m = float(np.nanmedian(d))
    out["pbc_fields_scale"] = {"fields": len(d), "no_estimate": int(np.isnan(d).sum()), "median_rbc_px": m,
                               "median_abs_deviation_from_median": float(np.nanmedian(np.abs(d / m - 1))),
                               "p90_abs_deviation": float(np.nanpercentile(np.abs(d / m - 1), 90))}
    _write(request, "deepbionet-detection-scale", {
        "command": "pytest benchmarks/test_accuracy.py --accuracy -k detection_and_scale",
        "note": "A detection is right when its centre lies inside a true white-cell box; only white-cell-sized "
                "detections count. Scale: estimated red-cell diameter vs the median of the image's whole "
                "red-cell boxes (mean of box width and height). The detector's thresholds were chosen with the "
                "files at even positions (sorted by name) in view; the odd positions are the report half. PBC has no red-cell "
                "boxes: its figure is the spread of the estimates over 160 fields taken at one magnification. "
                "Data: Shams et al., Blood Cells Mol Dis 2024.", **out}, [])
    rep = out["report_odd"]
    record.add("detection, DeepBioNet odd half", recall=round(rep["recall"], 4), precision=round(rep["precision"], 4),
               scale_median_abs_err=round(rep["scale"]["median_abs_relative_error"], 4))
    assert rep["recall"] >= 0.9 and rep["precision"] >= 0.9


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
