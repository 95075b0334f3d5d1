"""Post-training int8 with three first calibration images: which pins the input to [0, 255]
without widening every other activation range?

    .venv/bin/python benchmarks/int8_anchor.py RUN/model.keras --out benchmarks/results/int8-anchor-NAME

Anchors: ``halves`` (the old one: top half black, bottom half white), ``pixels`` (the current
one, compress.convert.range_anchor: a real training image with one black and one white pixel)
and ``none``. For each: accuracy on the run's held-out test split, top-1 agreement with the
float model, the input quantisation, and the per-tensor diagnosis of compress/diagnose.py.
``pixels-bn`` (asked for by name) first re-estimates every BatchNorm layer's statistics on the
representative images (train.average.recalibrate_on_sample), then converts as ``pixels``: a
remedy tried, measured without the per-tensor diagnosis.
Writes OUT.json (summaries) and OUT-ANCHOR.csv / OUT-ANCHOR.png (the per-tensor tables).
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scopelite.compress import convert, diagnose
from scopelite.compress.pipeline import DIAGNOSIS_IMAGES
from scopelite.edge.bundle import write_json_atomic
from scopelite.edge.sysinfo import machine
from scopelite.train import model as model_lib
from scopelite.train.run import heldout_data, load_keras_bundle


def halves(image: np.ndarray) -> np.ndarray:
    img = np.zeros_like(image)
    img[: image.shape[0] // 2] = 255
    return img


ANCHORS = {"halves": halves, "pixels": convert.range_anchor, "none": None}
CHOICES = [*ANCHORS, "pixels-bn"]


def top1(blob: bytes, images: np.ndarray) -> tuple[np.ndarray, tuple]:
    from scopelite.edge import runtime

    it = runtime.make_interpreter(None, model_content=blob)
    (i,), (o,) = it.get_input_details(), it.get_output_details()
    out = []
    for img in images:
        it.set_tensor(i["index"], img[None].astype(i["dtype"]))
        it.invoke()
        out.append(int(np.argmax(it.get_tensor(o["index"])[0])))
    return np.array(out), tuple(float(x) for x in i["quantization"])


def batchnorm_remedy(model, tcfg: dict, n_classes: int, rep: np.ndarray, test, p_float: np.ndarray) -> dict:
    """BatchNorm statistics re-estimated on ``rep``, then post-training int8 with the current anchor."""
    from scopelite.train._keras import keras
    from scopelite.train.average import recalibrate_on_sample

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    recalibrate_on_sample(copy, rep, 32, batches=16, seed=0)
    p_bn = copy.predict(test.images.astype(np.float32), batch_size=64, verbose=0).argmax(1)
    fixed = model_lib.rebuild_for_export(copy, tcfg["arch"], tcfg["image_size"], n_classes)
    p, q = top1(convert.to_int8(fixed, rep), test.images)
    return {"float_test_accuracy_after_batchnorm": float((p_bn == test.labels).mean()),
            "int8_test_accuracy": float((p == test.labels).mean()),
            "top1_agreement_with_float": float((p == p_float).mean()),
            "top1_agreement_with_its_float": float((p == p_bn).mean()),
            "input_quantization": {"scale": q[0], "zero_point": int(q[1])}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="Prefix of the files to write.")
    ap.add_argument("--representative", type=int, default=256)
    ap.add_argument("--anchors", nargs="+", default=list(ANCHORS), choices=CHOICES)
    args = ap.parse_args()
    sc, model = load_keras_bundle(args.model)
    tcfg = sc.provenance.training.config
    ds, split = heldout_data(sc, args.model, None)
    train, test = ds.subset(split["train"]), ds.subset(split["test"])
    fixed = model_lib.rebuild_for_export(model, tcfg["arch"], tcfg["image_size"], len(sc.labels))
    rep = train.images[convert.representative_indices(train.labels, args.representative, 0)]
    p_float = model.predict(test.images.astype(np.float32), batch_size=64, verbose=0).argmax(1)
    pick = convert.representative_indices(test.labels, DIAGNOSIS_IMAGES, 0)
    result = {"what": __doc__.split("\n\n")[0].replace("\n", " "),
              "command": shlex.join([".venv/bin/python", *sys.argv]), "date": datetime.date.today().isoformat(),
              "machine": machine(), "model": args.model.name, "data": ds.description, "test_images": len(test),
              "representative": len(rep), "float_test_accuracy": float((p_float == test.labels).mean()),
              "anchors": {}}
    for name in args.anchors:
        if name == "pixels-bn":
            result["anchors"][name] = batchnorm_remedy(model, tcfg, len(sc.labels), rep, test, p_float)
            print(f"{name}: {result['anchors'][name]}", flush=True)
            continue
        make = ANCHORS[name]
        anchor = None if make is None else make(rep[0])
        t = time.time()
        if anchor is None:  # no anchor at all: calibrate on the representative images only
            conv = convert.int8_converter(fixed, rep[1:], anchor=rep[0])
        else:
            conv = convert.int8_converter(fixed, rep, anchor=anchor)
        blob = convert._convert(conv)  # noqa: SLF001
        seconds = time.time() - t
        p, q = top1(blob, test.images)
        with tempfile.TemporaryDirectory() as tmp:
            summary = diagnose.diagnose(fixed, blob, test.images[pick], rep, Path(tmp), {"anchor": name},
                                        anchor=rep[0] if anchor is None else anchor)
            shutil.copy(Path(tmp) / "int8-diagnosis.csv", f"{args.out}-{name}.csv")
            shutil.copy(Path(tmp) / "int8-diagnosis.png", f"{args.out}-{name}.png")
        result["anchors"][name] = {"int8_test_accuracy": float((p == test.labels).mean()),
                                   "top1_agreement_with_float": float((p == p_float).mean()),
                                   "input_quantization": {"scale": q[0], "zero_point": int(q[1])},
                                   "convert_s": round(seconds, 1), "diagnosis": summary,
                                   "per_tensor": f"{args.out.name}-{name}.csv"}
        print(f"{name}: int8 {100 * result['anchors'][name]['int8_test_accuracy']:.2f} % "
              f"(float {100 * result['float_test_accuracy']:.2f} %), input {q}", flush=True)
    write_json_atomic(f"{args.out}.json", result)


if __name__ == "__main__":
    main()
