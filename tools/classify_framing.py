"""How `celledge classify` does on single-cell crops framed unlike the training crops, as given and rescaled.

Each labelled field's white cell (the largest white-cell-sized detection) is cut as a square of k red-cell
diameters (the field's own ruler) for k in FRAMINGS (5.33: the shipped model's training framing, 96 / 18), at the
field's own resolution, as another collection would have cut it; then scored as given (--rescale none), rescaled
(`celledge classify`: crop_scale.rescale, --rescale each, the default), with one framing for the part's crops at
that framing (--rescale shared: the median over 15 spread through them) and as `celledge watch FOLDER` crop mode
frames a folder of them (one framing for the stream: crop_scale.StreamFraming). PBC's crops of its test split (96 px, the model's
own framing and size) are scored the same ways.

    python tools/classify_framing.py --data ../shared/data --split runs/any-pbc-run/split.json --out RESULT.json

Parts: PBC fields (120 of 160 are the shipped model's training images), DeepBioNet's adapt and report parts
(split by cell, as tools/few_shot.py splits them). Recorded: benchmarks/results/classify-rescale.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from scopelite.edge import crop_scale, fieldset
from scopelite.edge import field as field_lib
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.preprocess import prepare
from scopelite.edge.scale import estimate_rbc_diameter
from scopelite.edge.site import pick_evenly
from scopelite.edge.sources import list_images, read_image_rgb
from scopelite.edge.stain import stain_layers
from scopelite.edge.sysinfo import machine

FRAMINGS = (1.6, 2.2, 3.0, 4.0, 5.33, 8.0)
NAMES = ("as_given", "rescaled", "shared", "crop_mode")


def framed(image: np.ndarray, k: float) -> np.ndarray | None:
    """The field's largest white cell in a square of ``k`` of the field's red-cell diameters; None: no ruler or cell."""
    layers = stain_layers(image)
    rbc = estimate_rbc_diameter(image, layers).diameter_px
    if rbc is None:
        return None
    white = [d for d in field_lib.detect(image, rbc, layers) if d.kind == "white"]
    return None if not white else np.ascontiguousarray(field_lib.crop(image, white[0], int(round(k * rbc))))


def score(clf, items, spec, model_rbc) -> dict:
    """items: (crop, true class). Accuracy as given, rescaled (celledge classify: each image alone) and as
    `celledge watch FOLDER` crop mode frames them (one framing for the stream: crop_scale.StreamFraming, the
    images in the part's order); how each image was rescaled."""
    labels = list(clf.labels)
    hits: dict[str, list[bool]] = defaultdict(list)
    sources: Counter = Counter()
    ms = []
    stream = crop_scale.StreamFraming(model_rbc, spec.height)
    zoom, zooms = crop_scale.shared_zoom(pick_evenly([c for c, _ in items], crop_scale.SAMPLE), model_rbc, spec.height)
    for crop, truth in items:
        t0 = time.perf_counter()
        view, found = crop_scale.rescale(crop, model_rbc, spec.height)
        ms.append(1000 * (time.perf_counter() - t0))
        sources[found.source] += 1
        shared = crop_scale.at_zoom(crop, zoom, len(zooms), spec.height, "shared")[0]
        for name, img in (("as_given", crop), ("rescaled", view), ("shared", shared), ("crop_mode", stream.view(crop)[0])):
            hits[name].append(labels[int(np.argmax(clf.classify(prepare(img, spec)[None])[0]))] == truth)
    return {"images": len(ms), **{n: round(float(np.mean(hits[n])), 4) for n in NAMES},
            "rescaled_by": dict(sources), "rescale_ms_median": round(float(np.median(ms)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="../shared/data")
    ap.add_argument("--split", type=Path, required=True, help="a pbc96 run's split.json (its test part is scored)")
    ap.add_argument("--parts", nargs="+", default=["pbc-test", "pbc-fields", "deepbionet-adapt", "deepbionet-report"])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    clf = LiteRTClassifier(default_model(), num_threads=1)
    spec = clf.input_spec
    model_rbc = field_lib.model_rbc_px(spec)
    result = {"what": __doc__.split("\n")[0], "command": "python " + " ".join(sys.argv), "machine": machine(),
              "date": datetime.date.today().isoformat(), "model": "shipped int8 (scopelite.edge.packaged)",
              "framings": list(FRAMINGS), "training_framing": round(spec.height / model_rbc, 2), "parts": {}}
    fields: dict[str, list[Path]] = {"pbc-fields": list_images([a.data / "pbc-fields"])}
    if any(p.startswith("deepbionet") for p in a.parts):
        dbn = list_images([a.data / "other-labs" / "deepbionet" / "fields"])
        cfg = field_lib.FieldConfig(model_rbc_px=model_rbc, input_px=spec.height)
        groups = fieldset.groups_from_scores(dbn, fieldset.copy_scores(fieldset.main_cell_crops(dbn, cfg)))
        fields["deepbionet-adapt"], fields["deepbionet-report"] = fieldset.parts_by_number(dbn, groups)
    for part in a.parts:
        if part == "pbc-test":
            test = json.loads(a.split.read_text())["test"]
            items = [(read_image_rgb(a.data / "pbc96" / rel), rel.split("/")[0]) for rel in test]
            result["parts"][part] = score(clf, items, spec, model_rbc)
        else:
            images = [(read_image_rgb(p), fieldset.truth(p)) for p in fields[part]]
            per = {}
            for k in FRAMINGS:
                items = [(c, t) for c, t in ((framed(img, k), t) for img, t in images) if c is not None]
                per[str(k)] = score(clf, items, spec, model_rbc)
            per["mean"] = {n: round(float(np.mean([per[str(k)][n] for k in FRAMINGS])), 4)
                           for n in NAMES}
            result["parts"][part] = per
        print(part, json.dumps(result["parts"][part]), flush=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
