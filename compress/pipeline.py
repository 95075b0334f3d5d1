"""cellcompress's work: a trained Keras bundle in; int8 (PTQ, QAT), float16 and dynamic-range
TFLite bundles out, each measured on the run's held-out split, clean and corrupted; a gate that
approves the best int8 model only if it lost no more than allowed against the float model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge import runtime
from scopelite.edge.bundle import (APPROVED, Compression, Gate, Machine, Provenance, Quantization, Sidecar, SourceModel,
                                   TensorSpec, build_sidecar, derive_sidecar, sha256_file, sidecar_path,
                                   write_bytes_atomic, write_json_atomic, write_sidecar)
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.errors import UserError
from scopelite.edge.precious import foreign_files, is_sidecar, json_with, refuse_foreign
from scopelite.edge.provenance import method_of
from scopelite.edge.sysinfo import machine
from scopelite.train import model as model_lib
from scopelite.train._keras import versions
from scopelite.train.corruptions import corrupted_copy
from scopelite.train.metrics import summarize
from scopelite.train.data import refuse_out_in_data
from scopelite.train.run import heldout_data, load_keras_bundle

from . import convert, edgetpu
from .ops import DYNAMIC_SHAPE_OPS, op_counts

QAT_AGREEMENT_MIN = 0.99  # Keras QAT vs its TFLite int8 conversion, top-1 on the test split
DIAGNOSIS_IMAGES = 48  # --diagnose: held-out images run through both graphs with every tensor kept
# what a run may leave in --out besides model.tflite and report.*: removed when this run did not make them, so
# no variant of an earlier model (an Edge TPU build above all) stays beside the new approval
RUN_FILES = tuple(f"model_{k}.{ext}" for k in ("int8", "qat_int8", "qat_calibrated_int8", "float16",
                                                "dynamic_range") for ext in ("tflite", "json")) + \
    ("model_edgetpu.tflite", "model_edgetpu.json", "model_edgetpu.log",
     "int8-diagnosis.json", "int8-diagnosis.csv", "int8-diagnosis.png")


class GateFailed(UserError):
    """No int8 model stayed within the allowed accuracy drop."""

    exit_code = 3


@dataclass(frozen=True)
class CompressConfig:
    model: str
    out: str
    int8: bool = True
    qat: bool = False
    float16: bool = False
    dynamic_range: bool = False
    edgetpu: bool = False
    compiler: str | None = None
    io_dtype: str = "uint8"
    representative: int = 256
    qat_epochs: int = 2
    qat_learning_rate: float = 1e-5
    qat_batch_size: int = 32
    qat_ranges: str = "learned"  # learned (TFMOT's) | calibrated (converter, as PTQ) | both
    max_drop_clean: float = 1.0  # accuracy points
    max_drop_corrupted: float = 2.0
    data: str | None = None  # default: the data the run was trained on
    seed: int = 0
    diagnose: bool = False  # per-tensor error of the post-training int8 model (compress/diagnose.py)


def classify_all(clf: LiteRTClassifier, images: np.ndarray, desc: str) -> np.ndarray:
    from tqdm import tqdm  # noqa: PLC0415

    out = np.empty((len(images), len(clf.labels)))
    for i in tqdm(range(len(images)), desc=desc, unit="img", leave=False):
        out[i] = clf.classify(images[i : i + 1])[0]
    return out


def _quant(det) -> Quantization | None:
    scale, zp = det["quantization"]
    return Quantization(float(scale), int(zp)) if scale else None


def tflite_sidecar(path: Path, src: Sidecar, src_path: Path, kind: str, metrics: dict, cfg: CompressConfig,
                   ops: dict, runtimes=("cpu",), extra: dict | None = None,
                   representative: int | None = None) -> Sidecar:
    """The sidecar of variant ``kind`` at ``path``, made from the Keras bundle ``src`` at ``src_path``.

    ``extra``: the variant's own record (``quantization`` in words, QAT history...);
    ``representative``: images its activation ranges were calibrated on (int8 variants).
    """
    interp = runtime.make_interpreter(path, plain=True)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    extra = dict(extra or {})
    int8 = kind.endswith("int8")
    compression = Compression(
        variant=kind, method=method_of(kind, extra.get("qat_requested", cfg.qat)),
        quantization=extra.pop("quantization", kind), config=asdict(cfg),
        representative=(representative or cfg.representative) if int8 else None,
        gate=Gate.from_dict(metrics["gate"], "gate") if metrics.get("gate") else None,
        op_counts=ops, size_bytes=path.stat().st_size,
        machine=Machine.from_dict(metrics.get("measured_on") or machine()), extra=extra)
    return build_sidecar(
        path, format="tflite", labels=src.labels,
        # the preprocessing the model was trained with, as its Keras sidecar says; only the tensor type changes
        input=replace(src.input, dtype=np.dtype(inp["dtype"]).name, quantization=_quant(inp)),
        output=TensorSpec(dtype=np.dtype(out["dtype"]).name, quantization=_quant(out)),
        runtimes=runtimes, metrics=metrics,
        provenance=Provenance(tools=versions(), source=SourceModel(src_path.name, sha256_file(src_path), src.format),
                              training=src.provenance.training, compression=compression),
        synthetic_data=src.synthetic_data, stain_reference=src.stain_reference, views=src.views)


def _measure(path: Path, sc_draft: Sidecar, test, corrupted: np.ndarray, p_float_clean: np.ndarray,
             label: str) -> tuple[dict, np.ndarray]:
    """The variant's metrics, and its top-1 class for each clean test image."""
    clf = LiteRTClassifier(path, num_threads=2, sidecar=sc_draft)
    p_clean = classify_all(clf, test.images, f"{label} clean")
    p_corr = classify_all(clf, corrupted, f"{label} corrupted")
    clean, corr = summarize(test.labels, p_clean, sc_draft.labels), summarize(test.labels, p_corr, sc_draft.labels)
    latency = {f"threads_{n}": LiteRTClassifier(path, num_threads=n, sidecar=sc_draft).latency_ms() for n in (1, 2)}
    top1 = p_clean.argmax(1)
    return {
        "clean": {k: clean[k] for k in ("accuracy", "macro_f1", "ece", "per_class", "confusion")},
        "corrupted": {k: corr[k] for k in ("accuracy", "macro_f1")},
        "top1_agreement_with_float": float((p_float_clean.argmax(1) == top1).mean()),
        "latency_ms": latency,
        "size_bytes": path.stat().st_size,
    }, top1


MIN_GATE_IMAGES = 5  # smaller test splits get no one-image allowance: one image there is 20+ points


def gate(float_m: dict, m: dict, cfg: CompressConfig, n_images: int | None = None) -> dict:
    """Accuracy drop (points) of ``m`` against the float model, clean and corrupted, and the verdict.

    With ``n_images`` (the test split's size, at least ``MIN_GATE_IMAGES``): when one image is worth
    more points than a positive threshold, a net drop of one image per metric passes, with a note. A
    split that small cannot measure the threshold (a lab's few-shot run keeps 6-13 test images: one
    image is 8-17 points, and int8 flips one of them in about one run in eight); two images still fail.
    A drop equal to the threshold passes (to float rounding)."""
    one = 100.0 / n_images if n_images and n_images >= MIN_GATE_IMAGES else None
    failures, notes = [], []
    drops = {}
    for name, limit in (("clean", cfg.max_drop_clean), ("corrupted", cfg.max_drop_corrupted)):
        before, after = 100 * float_m[name]["accuracy"], 100 * m[name]["accuracy"]
        drop = drops[name] = before - after
        if drop <= limit + 1e-6:
            continue
        if one is not None and 0 < limit < one and drop <= one + 1e-6:
            notes.append(f"{name} accuracy drop of one image ({drop:.2f} pt of {n_images} test images) let "
                         f"through: a split this small cannot measure a {limit} pt threshold")
        else:
            failures.append(f"{name} accuracy drop {drop:.2f} pt > {limit} pt ({before:.2f} -> {after:.2f} %)")
    return {"max_drop_clean_pt": cfg.max_drop_clean, "max_drop_corrupted_pt": cfg.max_drop_corrupted,
            "drop_clean_pt": round(drops["clean"], 3), "drop_corrupted_pt": round(drops["corrupted"], 3),
            "passed": not failures, "failures": failures, **({"notes": notes} if notes else {})}


def _qat_model(model, tcfg: dict, n_classes: int, train, val, test, cfg: CompressConfig, log):
    """QAT fine-tune ``model``; return the batch-1 export model, the history and the Keras QAT model's
    predictions on ``test`` (what the TFLite int8 conversion must reproduce)."""
    from scopelite.train.augment import make_dataset  # noqa: PLC0415

    from . import qat  # noqa: PLC0415

    arch, size = tcfg["arch"], tcfg["image_size"]
    trainable = model_lib.rebuild_for_export(model, arch, size, n_classes, batch_size=None)
    q = qat.quantize(trainable)
    # Fine-tune on what the float model was trained on, augmentation included: QAT on plain
    # images keeps clean accuracy but gives back robustness to corrupted ones.
    policy, strength = tcfg.get("augment", "flips"), tcfg.get("strength", 0.7)
    log(f"      QAT fine-tuning: {cfg.qat_epochs} epochs at lr {cfg.qat_learning_rate}, augmentation {policy}")
    train_ds = make_dataset(train.images, train.labels, n_classes, cfg.qat_batch_size, True, policy, strength,
                            seed=cfg.seed)
    val_ds = make_dataset(val.images, val.labels, n_classes, cfg.qat_batch_size, False)
    history = qat.fine_tune(q, train_ds, val_ds, cfg.qat_epochs, cfg.qat_learning_rate, verbose=2)
    bad = model_lib.non_finite_weights(q)
    if bad:  # converted anyway, the NaN ranges ended in a LiteRT RuntimeError traceback (a hunt of session 37)
        raise UserError(f"quantisation-aware training diverged at --qat-lr {cfg.qat_learning_rate:g}: {bad} of its "
                        "weight arrays hold NaN or infinity; give a lower --qat-lr (the default is "
                        f"{CompressConfig.qat_learning_rate:g})")
    p_keras = q.predict(test.images.astype(np.float32), batch_size=64, verbose=0)
    build = lambda: model_lib.rebuild_for_export(model, arch, size, n_classes)  # noqa: E731
    exports = {}
    if cfg.qat_ranges in ("learned", "both"):
        exports["qat_int8"] = qat.for_export(q, build)
    if cfg.qat_ranges in ("calibrated", "both"):
        exports["qat_calibrated_int8"] = qat.strip(q, build)
    return exports, history, p_keras


def foreign_outputs(out: str | Path) -> list[str]:
    """The files in ``out`` named as cellcompress names its outputs that an earlier cellcompress did not write (a
    .tflite without a scopelite sidecar, a report.json that is not its report): a run into ``out`` replaced or removed
    them (a user's model_float16.tflite was deleted, their report.md replaced), exit 0."""
    def model(p: Path) -> bool | None:  # a .tflite without its sidecar: a run cut between the two writes, or a user's
        return True if is_sidecar(sidecar_path(p)) else None

    def judge(n: str):  # a diagnosis, a compiler's log, report.md: by the company they keep
        return model if n.endswith(".tflite") else is_sidecar if n.startswith("model") and n.endswith(".json") \
            else (lambda p: None)

    judges = {n: judge(n) for n in (*RUN_FILES, APPROVED, sidecar_path(APPROVED).name, "report.md")}
    judges["report.json"] = json_with("variants", "float")
    return foreign_files(out, judges)


def compress(cfg: CompressConfig, log: Callable[[str], None] = print) -> dict:
    """Convert, measure and gate; write the bundles and ``report.json`` into ``cfg.out``.

    Raises:
        GateFailed: no int8 variant passed the gate (no ``model.tflite`` is left in ``cfg.out``).
    """
    if not (cfg.int8 or cfg.qat or cfg.float16 or cfg.dynamic_range):
        raise UserError("choose an output: --int8, --qat, --float16 and/or --dynamic-range")
    if cfg.diagnose and not cfg.int8:
        raise UserError("--diagnose examines the post-training int8 model: add --int8")
    if cfg.compiler and not cfg.edgetpu:  # given and ignored without a word
        raise UserError("--compiler is the edgetpu_compiler that --edgetpu runs: add --edgetpu, or leave it out")
    if cfg.qat_ranges != "learned" and not cfg.qat:
        raise UserError(f"--qat-ranges {cfg.qat_ranges} sets how quantisation-aware training's ranges are used: add "
                        "--qat, or leave it out")
    compiler = edgetpu.find_compiler(cfg.compiler) if cfg.edgetpu else None
    src_path = Path(cfg.model)
    out = Path(cfg.out)
    if sidecar_path(out / APPROVED).resolve() == sidecar_path(src_path).resolve():
        raise UserError(f"--out {out} is the training run's own folder: the int8 model's sidecar ({APPROVED} -> "
                        f"{sidecar_path(out / APPROVED).name}) would replace the Keras model's; give another folder, "
                        f"e.g. --out {out / 'int8'}")
    if (out / "model.keras").is_file() and (out / sidecar_path(APPROVED)).is_file():
        raise UserError(f"--out {out} is another training run's folder: the int8 model's sidecar "
                        f"({sidecar_path(APPROVED)}) would replace its Keras model's; give another folder, "
                        f"e.g. --out {src_path.parent / 'int8'}")
    refuse_foreign(cfg.out, foreign_outputs(cfg.out), "cellcompress", does="replace or remove")
    sc, model = load_keras_bundle(src_path, diverged="there is nothing to compress; train again with a lower --lr")
    tcfg = sc.provenance.training.config
    n_classes = len(sc.labels)
    if sc.synthetic_data:
        log("NOTE: this model was trained on SYNTHETIC data")
    log("[1/5] loading the run's data and split; making the corrupted copy of the test split")
    ds, split = heldout_data(sc, src_path, cfg.data)
    # its reports and models would be read as a class (or a class with no images) by the next fit
    refuse_out_in_data(cfg.out, ds.root, f"the data the run was trained on ({ds.root})",
                       "give a folder outside it, e.g. the run's own int8/")
    train, val, test = (ds.subset(split[s]) for s in ("train", "val", "test"))
    corrupted, _ = corrupted_copy(test.images, cfg.seed)
    too_few = len(test) < MIN_GATE_IMAGES and (cfg.max_drop_clean < 100 or cfg.max_drop_corrupted < 100)
    if too_few:
        log(f"NOTE: the run's test split holds {len(test)} images: one image is {100 / max(len(test), 1):.0f} "
            f"points, too coarse for the gate to judge int8 (it needs {MIN_GATE_IMAGES}: label more cells)")

    log(f"[2/5] float model on {len(test)} held-out test images, clean and corrupted")
    p_float = model.predict(test.images.astype(np.float32), batch_size=64, verbose=0)
    p_float_corr = model.predict(corrupted.astype(np.float32), batch_size=64, verbose=0)
    float_m = {split: {k: m[k] for k in ("accuracy", "macro_f1")}
               for split, m in (("clean", summarize(test.labels, p_float, sc.labels)),
                                ("corrupted", summarize(test.labels, p_float_corr, sc.labels)))}

    log("[3/5] converting (batch 1)")
    fixed = model_lib.rebuild_for_export(model, tcfg["arch"], tcfg["image_size"], n_classes)
    rep = train.images[convert.representative_indices(train.labels, cfg.representative, cfg.seed)]
    variants: dict[str, tuple[bytes, dict]] = {}
    keras_twins: dict[str, np.ndarray] = {}  # Keras predictions a TFLite variant must reproduce
    if cfg.int8:
        variants["int8"] = (convert.to_int8(fixed, rep, cfg.io_dtype), {"quantization": "post-training full-integer"})
    if cfg.qat:
        _add_qat(variants, keras_twins, model, tcfg, n_classes, train, val, test, rep, cfg, log)
    if cfg.float16:
        variants["float16"] = (convert.to_float16(fixed), {"quantization": "float16 weights"})
    if cfg.dynamic_range:
        variants["dynamic_range"] = (convert.to_dynamic_range(fixed), {"quantization": "int8 weights, float activations"})

    log(f"[4/5] measuring {', '.join(variants)}: accuracy (clean, corrupted), latency, size, ops")
    report = {"model": str(src_path), "split": "test", "n": len(test), "data": ds.description,
              "corrupted_protocol": f"one of 16 corruptions at severity 1-5 per image, seed {cfg.seed}",
              "float": float_m, "variants": {}, "measured_on": machine()}

    def measure_all(kinds):
        """Write, measure, gate and describe each variant (report["variants"][kind])."""
        for kind in kinds:
            blob, extra = variants[kind]
            path = out / f"model_{kind}.tflite"
            sidecar_path(path).unlink(missing_ok=True)  # an interrupted run leaves no old sidecar beside a new model
            write_bytes_atomic(path, blob)
            ops = op_counts(path)
            bad = [o for o in DYNAMIC_SHAPE_OPS if o in ops]
            if bad:  # would be a converter regression: the Edge TPU cannot map these
                raise UserError(f"{kind} graph holds dynamic-shape ops {bad}; export with a fixed batch of 1")
            draft = tflite_sidecar(path, sc, src_path, kind, {}, cfg, ops, extra=extra, representative=len(rep))
            m, top1 = _measure(path, draft, test, corrupted, p_float, kind)
            m["ops"] = ops
            if kind in keras_twins:  # the fake-quant Keras graph and its int8 conversion must agree
                m["top1_agreement_keras_qat_vs_tflite"] = float((keras_twins[kind].argmax(1) == top1).mean())
                if kind == "qat_int8" and m["top1_agreement_keras_qat_vs_tflite"] < QAT_AGREEMENT_MIN:
                    log(f"      WARNING: the {kind} TFLite model agrees with its Keras QAT model on only "
                        f"{100 * m['top1_agreement_keras_qat_vs_tflite']:.2f} % of test images "
                        f"(expected >= {100 * QAT_AGREEMENT_MIN:.0f} %)")
            if kind.endswith("int8"):
                m["gate"] = gate(float_m, m, cfg, len(test))
                m["edgetpu_offline"] = edgetpu.compatibility(path)
            metrics = {"split": "test", "n": len(test), "data": ds.description, "float": float_m, **m,
                       "measured_on": report["measured_on"]}
            write_sidecar(path, tflite_sidecar(path, sc, src_path, kind, metrics, cfg, ops, extra=extra,
                                               representative=len(rep)))
            report["variants"][kind] = {k: v for k, v in m.items() if k not in ("clean",)} | {
                "clean": {k: m["clean"][k] for k in ("accuracy", "macro_f1")}}
            log(f"      {kind:>14}: clean {100 * m['clean']['accuracy']:.2f} %  corrupted "
                f"{100 * m['corrupted']['accuracy']:.2f} %  {m['size_bytes'] / 1e6:.2f} MB  "
                f"{m['latency_ms']['threads_2']['p50_ms']:.3f} ms (2 threads)"
                + (f"  gate {'PASS' if m['gate']['passed'] else 'FAIL'}" if "gate" in m else ""))
            for note in m.get("gate", {}).get("notes", []):
                log(f"      NOTE: {note}; check the model on more of your labelled cells")

    measure_all(list(variants))
    if cfg.diagnose and "int8" in variants:
        report["int8_diagnosis"] = _diagnose(fixed, variants["int8"][0], test, rep, out, cfg, log)
    int8_kinds = [k for k in report["variants"] if k.endswith("int8")]
    if cfg.int8 and not cfg.qat and int8_kinds and not any(report["variants"][k]["gate"]["passed"] for k in int8_kinds):
        # post-training quantisation of an under-trained network can collapse (activation ranges far
        # wider than the values that matter); quantisation-aware training learns ranges that fit
        log("      post-training int8 failed the gate: trying quantisation-aware training (as --qat)"
            + ("" if cfg.diagnose else "; --diagnose shows where it lost (docs/int8.md)"))
        before = set(variants)
        _add_qat(variants, keras_twins, model, tcfg, n_classes, train, val, test, rep, cfg, log)
        measure_all([k for k in variants if k not in before])
        report["automatic_qat"] = True

    log("[5/5] gate and approval")
    int8_kinds = [k for k in report["variants"] if k.endswith("int8")]
    passed = [k for k in int8_kinds if report["variants"][k]["gate"]["passed"]]
    withdrawn = not passed and (out / APPROVED).exists()
    if withdrawn:  # an old approval is kept until now (an interrupted run keeps it whole), and not past a run that
        (out / APPROVED).unlink()  # approves nothing
        sidecar_path(out / APPROVED).unlink(missing_ok=True)
    _remove_earlier(out, variants, report, log)  # before compiling too: a failed compile leaves no earlier build
    if int8_kinds and not passed:
        _write_report(out, {**report, "approved": None})
        reasons = "; ".join(f"{k}: {', '.join(report['variants'][k]['gate']['failures'])}" for k in int8_kinds)
        tried_qat = cfg.qat or report.get("automatic_qat")
        # the message said "nothing written" while it removed the model an earlier run approved there: a device
        # reading that path lost its model without a word (a hunt of session 37)
        none = (f"{out / APPROVED}, approved by an earlier run, was removed (a folder's approved model is its last "
                "run's)" if withdrawn else f"nothing written as {out / APPROVED}")
        if too_few:  # not the model's fault: the split cannot measure it
            raise GateFailed(f"no int8 model approved ({reasons}); {none}. The test "
                             f"split holds {len(test)} images, too few to judge (the gate needs {MIN_GATE_IMAGES}): "
                             "label more cells, or check the int8 model on your own cells and accept it with "
                             "--max-drop 100 100")
        raise GateFailed(f"no int8 model approved ({reasons}); {none}. "
                         + ("Quantisation-aware training was tried too; train the float model longer, use " if tried_qat
                            else "Try --qat, ")
                         + "more --representative images, or a looser --max-drop if you accept it. "
                         + (f"Where post-training int8 loses: {out / 'int8-diagnosis.png'} (docs/int8.md)"
                            if report.get("int8_diagnosis") else
                            "Add --diagnose to see where post-training int8 loses, tensor by tensor (docs/int8.md)"))
    if passed:
        best = max(passed, key=lambda k: (report["variants"][k]["corrupted"]["accuracy"],
                                          report["variants"][k]["clean"]["accuracy"]))
        _approve(out / f"model_{best}.tflite", out / APPROVED)
        report["approved"] = {"variant": best, "file": APPROVED}
        log(f"      approved {best} -> {out / APPROVED}")
        if cfg.edgetpu:
            try:
                report["edgetpu"] = _edgetpu(out / APPROVED, out, compiler, sc, src_path, cfg, log)
            except UserError as e:  # the compiler failed: the approval and this run's report stand, then the error
                report["edgetpu"] = {"compiled": None, "error": str(e)}
                _write_report(out, report)
                raise
    _write_report(out, report)
    return report


def _write_report(out: Path, report: dict) -> None:
    write_json_atomic(out / "report.json", report)
    write_bytes_atomic(out / "report.md", markdown(report).encode())


def _remove_earlier(out: Path, variants: dict, report: dict, log) -> None:
    """Remove what an earlier run into ``out`` made and this one did not (RUN_FILES), before its Edge TPU
    compilation (an earlier build goes whether or not this one compiles)."""
    made = {f"model_{k}.{ext}" for k in variants for ext in ("tflite", "json")}
    if report.get("int8_diagnosis"):
        from .diagnose import FILES  # noqa: PLC0415

        made |= set(FILES)
    stale = [n for n in RUN_FILES if n not in made and (out / n).is_file()]
    for n in stale:
        (out / n).unlink()
    shown = [n for n in stale if n.endswith((".tflite", ".png"))] or stale
    if stale:
        log(f"      removed {', '.join(shown)} of an earlier run into {out}")


def _add_qat(variants: dict, keras_twins: dict, model, tcfg: dict, n_classes: int, train, val, test, rep,
             cfg: CompressConfig, log) -> None:
    """Quantisation-aware training, then each exported QAT graph converted to full integer."""
    exports, qat_hist, p_keras_qat = _qat_model(model, tcfg, n_classes, train, val, test, cfg, log)
    how = {"qat_int8": "quantisation-aware training (weights and learned activation ranges), full-integer",
           "qat_calibrated_int8": "quantisation-aware training (weights), activation ranges calibrated on the "
                                  "representative set as in post-training quantisation, full-integer"}
    for kind, qat_fixed in exports.items():
        variants[kind] = (convert.to_int8(qat_fixed, rep, cfg.io_dtype),
                          {"quantization": how[kind], "qat_history": qat_hist, "qat_requested": cfg.qat})
        keras_twins[kind] = p_keras_qat


def _diagnose(fixed, int8_blob: bytes, test, rep: np.ndarray, out: Path, cfg: CompressConfig, log) -> dict:
    """``--diagnose``: int8-diagnosis.{json,csv,png} in ``out``; the summary for report.json."""
    from . import diagnose  # noqa: PLC0415

    pick = convert.representative_indices(test.labels, DIAGNOSIS_IMAGES, cfg.seed)
    context = {"model": cfg.model, "variant": "int8", "images": f"{len(pick)} held-out test images, stratified",
               "calibration": f"{len(rep)} representative training images", "measured_on": machine()}
    summary = diagnose.diagnose(fixed, int8_blob, test.images[pick], rep, out, context, log)
    return {"files": list(diagnose.FILES), **summary}


def _approve(variant: Path, dest: Path) -> None:
    from scopelite.edge.bundle import copy_bundle  # noqa: PLC0415

    copy_bundle(variant, dest, approved_from=variant.name)  # its gate is in the variant's compression record


def _edgetpu(model: Path, out: Path, compiler: str | None, sc: Sidecar, src_path: Path, cfg: CompressConfig,
             log) -> dict:
    offline = edgetpu.compatibility(model)
    res = {"offline": offline}
    if not offline["fully_mapped"]:
        log(f"      WARNING: {offline['cpu_ops']} of {offline['ops']} ops would fall back to the CPU "
            f"(first: {offline['problems'][0]['op']}: {offline['problems'][0]['why'][0]})")
    if compiler is None:
        log(f"      {edgetpu.INSTALL_HINT}; wrote the int8 model and the offline report only")
        res["compiled"] = None
        return res
    compiled, parsed = edgetpu.compile_model(model, out, compiler)
    res["compiled"] = {"file": compiled.name, **parsed}
    if parsed.get("cpu_ops"):
        log(f"      WARNING: the compiler left {parsed['cpu_ops']} ops on the CPU")
    from scopelite.edge.bundle import load_sidecar  # noqa: PLC0415

    base = load_sidecar(model)
    # the compiled file's own size; its ops are the compiler's (edgetpu_compiler), not the CPU model's
    prov = replace(base.provenance, cpu_model=model.name, copied_from=None, created=None,
                   compression=replace(base.provenance.compression, edgetpu_compiler=parsed, op_counts={},
                                       size_bytes=compiled.stat().st_size))
    tpu_sc = derive_sidecar(base, compiled, runtimes=("edgetpu",), provenance=prov)
    write_sidecar(compiled, tpu_sc)
    log(f"      compiled for the Edge TPU: {parsed.get('tpu_ops')} ops on the TPU, {parsed.get('cpu_ops')} on the "
        f"CPU, {parsed.get('subgraphs')} subgraph(s) -> {compiled}")
    return res


def markdown(report: dict) -> str:
    f = report["float"]
    lines = [f"# cellcompress report: {report['model']}", "",
             f"Held-out test split: {report['n']} images ({report['data']}). Corrupted: {report['corrupted_protocol']}.",
             "", "| model | clean acc | corrupted acc | size MB | p50 ms (1 thr) | p50 ms (2 thr) | gate |",
             "|---|---|---|---|---|---|---|",
             f"| Keras float | {100 * f['clean']['accuracy']:.2f} % | {100 * f['corrupted']['accuracy']:.2f} % | | | | |"]
    for k, v in report["variants"].items():
        g = v.get("gate")
        lines.append(f"| {k} | {100 * v['clean']['accuracy']:.2f} % | {100 * v['corrupted']['accuracy']:.2f} % | "
                     f"{v['size_bytes'] / 1e6:.2f} | {v['latency_ms']['threads_1']['p50_ms']:.3f} | "
                     f"{v['latency_ms']['threads_2']['p50_ms']:.3f} | "
                     f"{'' if g is None else ('pass' if g['passed'] else 'FAIL: ' + '; '.join(g['failures']))}"
                     f"{''.join(f' (note: {n})' for n in (g or {}).get('notes', []))} |")
    for k, v in report["variants"].items():
        if "top1_agreement_keras_qat_vs_tflite" in v:
            lines += ["", f"{k}: the TFLite int8 model and its Keras QAT model agree on "
                          f"{100 * v['top1_agreement_keras_qat_vs_tflite']:.2f} % of test images (top-1)."]
    if report.get("approved"):
        lines += ["", f"Approved: **{report['approved']['variant']}** -> `{report['approved']['file']}`"]
    elif "approved" in report:
        lines += ["", "Approved: **none**: no int8 variant passed the gate."]
    return "\n".join(lines) + "\n"
