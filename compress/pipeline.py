"""cellcompress's work: a trained Keras bundle in; int8 (PTQ, QAT), float16 and dynamic-range
TFLite bundles out, each measured on the run's held-out split, clean and corrupted; a gate that
approves the best int8 model only if it lost no more than allowed against the float model."""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge import runtime
from scopelite.edge.bundle import (InputSpec, Quantization, Sidecar, TensorSpec, sha256_file, sidecar_path,
                                   write_bytes_atomic, write_json_atomic, write_sidecar)
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.errors import UserError
from scopelite.edge.sysinfo import machine
from scopelite.train import model as model_lib
from scopelite.train._keras import versions
from scopelite.train.corruptions import corrupted_copy
from scopelite.train.metrics import summarize
from scopelite.train.run import heldout_data, load_keras_bundle

from . import convert, edgetpu
from .ops import DYNAMIC_SHAPE_OPS, op_counts

APPROVED = "model.tflite"
QAT_AGREEMENT_MIN = 0.99  # Keras QAT vs its TFLite int8 conversion, top-1 on the test split


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
                   ops: dict, runtimes=("cpu",), extra: dict | None = None) -> Sidecar:
    interp = runtime.make_interpreter(path, plain=True)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return Sidecar(
        format="tflite",
        file=path.name,
        sha256=sha256_file(path),
        labels=src.labels,
        input=InputSpec(height=src.input.height, width=src.input.width, dtype=np.dtype(inp["dtype"]).name,
                        quantization=_quant(inp), rbc_px=src.input.rbc_px),
        output=TensorSpec(dtype=np.dtype(out["dtype"]).name, quantization=_quant(out)),
        runtimes=tuple(runtimes),
        metrics=metrics,
        provenance={
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {"file": str(src_path), "sha256": sha256_file(src_path), "format": src.format},
            "variant": kind,
            "data": src.provenance.get("data"),
            "train_config": src.provenance.get("config"),
            "compress_config": asdict(cfg),
            "tools": versions(),
            "op_counts": ops,
            "size_bytes": path.stat().st_size,
            **(extra or {}),
        },
        synthetic_data=src.synthetic_data,
        stain_reference=src.stain_reference,
    )


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


def gate(float_m: dict, m: dict, cfg: CompressConfig) -> dict:
    """Accuracy drop (points) of ``m`` against the float model, clean and corrupted, and the verdict."""
    drop_clean = 100 * (float_m["clean"]["accuracy"] - m["clean"]["accuracy"])
    drop_corr = 100 * (float_m["corrupted"]["accuracy"] - m["corrupted"]["accuracy"])
    failures = []
    if drop_clean > cfg.max_drop_clean:
        failures.append(f"clean accuracy drop {drop_clean:.2f} pt > {cfg.max_drop_clean} pt "
                        f"({100 * float_m['clean']['accuracy']:.2f} -> {100 * m['clean']['accuracy']:.2f} %)")
    if drop_corr > cfg.max_drop_corrupted:
        failures.append(f"corrupted accuracy drop {drop_corr:.2f} pt > {cfg.max_drop_corrupted} pt "
                        f"({100 * float_m['corrupted']['accuracy']:.2f} -> {100 * m['corrupted']['accuracy']:.2f} %)")
    return {"max_drop_clean_pt": cfg.max_drop_clean, "max_drop_corrupted_pt": cfg.max_drop_corrupted,
            "drop_clean_pt": round(drop_clean, 3), "drop_corrupted_pt": round(drop_corr, 3),
            "passed": not failures, "failures": failures}


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
    p_keras = q.predict(test.images.astype(np.float32), batch_size=64, verbose=0)
    build = lambda: model_lib.rebuild_for_export(model, arch, size, n_classes)  # noqa: E731
    exports = {}
    if cfg.qat_ranges in ("learned", "both"):
        exports["qat_int8"] = qat.for_export(q, build)
    if cfg.qat_ranges in ("calibrated", "both"):
        exports["qat_calibrated_int8"] = qat.strip(q, build)
    return exports, history, p_keras


def compress(cfg: CompressConfig, log: Callable[[str], None] = print) -> dict:
    """Convert, measure and gate; write the bundles and ``report.json`` into ``cfg.out``.

    Raises:
        GateFailed: no int8 variant passed the gate (no ``model.tflite`` is left in ``cfg.out``).
    """
    if not (cfg.int8 or cfg.qat or cfg.float16 or cfg.dynamic_range):
        raise UserError("choose an output: --int8, --qat, --float16 and/or --dynamic-range")
    compiler = edgetpu.find_compiler(cfg.compiler) if cfg.edgetpu else None
    src_path = Path(cfg.model)
    out = Path(cfg.out)
    sc, model = load_keras_bundle(src_path)
    tcfg = sc.provenance["config"]
    n_classes = len(sc.labels)
    if sc.synthetic_data:
        log("NOTE: this model was trained on SYNTHETIC data")
    log("[1/5] loading the run's data and split; making the corrupted copy of the test split")
    ds, split = heldout_data(sc, src_path, cfg.data)
    train, val, test = (ds.subset(split[s]) for s in ("train", "val", "test"))
    corrupted, _ = corrupted_copy(test.images, cfg.seed)
    if (out / APPROVED).exists():  # a new run must not leave an old approval in place
        (out / APPROVED).unlink()
        sidecar_path(out / APPROVED).unlink(missing_ok=True)

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
            write_bytes_atomic(path, blob)
            ops = op_counts(path)
            bad = [o for o in DYNAMIC_SHAPE_OPS if o in ops]
            if bad:  # would be a converter regression: the Edge TPU cannot map these
                raise UserError(f"{kind} graph holds dynamic-shape ops {bad}; export with a fixed batch of 1")
            draft = tflite_sidecar(path, sc, src_path, kind, {}, cfg, ops, extra=extra)
            m, top1 = _measure(path, draft, test, corrupted, p_float, kind)
            m["ops"] = ops
            if kind in keras_twins:  # the fake-quant Keras graph and its int8 conversion must agree
                m["top1_agreement_keras_qat_vs_tflite"] = float((keras_twins[kind].argmax(1) == top1).mean())
                if kind == "qat_int8" and m["top1_agreement_keras_qat_vs_tflite"] < QAT_AGREEMENT_MIN:
                    log(f"      WARNING: the {kind} TFLite model agrees with its Keras QAT model on only "
                        f"{100 * m['top1_agreement_keras_qat_vs_tflite']:.2f} % of test images "
                        f"(expected >= {100 * QAT_AGREEMENT_MIN:.0f} %)")
            if kind.endswith("int8"):
                m["gate"] = gate(float_m, m, cfg)
                m["edgetpu_offline"] = edgetpu.compatibility(path)
            metrics = {"split": "test", "n": len(test), "data": ds.description, "float": float_m, **m,
                       "measured_on": report["measured_on"]}
            write_sidecar(path, tflite_sidecar(path, sc, src_path, kind, metrics, cfg, ops, extra=extra))
            report["variants"][kind] = {k: v for k, v in m.items() if k not in ("clean",)} | {
                "clean": {k: m["clean"][k] for k in ("accuracy", "macro_f1")}}
            log(f"      {kind:>14}: clean {100 * m['clean']['accuracy']:.2f} %  corrupted "
                f"{100 * m['corrupted']['accuracy']:.2f} %  {m['size_bytes'] / 1e6:.2f} MB  "
                f"{m['latency_ms']['threads_2']['p50_ms']:.3f} ms (2 threads)"
                + (f"  gate {'PASS' if m['gate']['passed'] else 'FAIL'}" if "gate" in m else ""))

    measure_all(list(variants))
    int8_kinds = [k for k in report["variants"] if k.endswith("int8")]
    if cfg.int8 and not cfg.qat and int8_kinds and not any(report["variants"][k]["gate"]["passed"] for k in int8_kinds):
        # post-training quantisation of an under-trained network can collapse (activation ranges far
        # wider than the values that matter); quantisation-aware training learns ranges that fit
        log("      post-training int8 failed the gate: trying quantisation-aware training (as --qat)")
        before = set(variants)
        _add_qat(variants, keras_twins, model, tcfg, n_classes, train, val, test, rep, cfg, log)
        measure_all([k for k in variants if k not in before])
        report["automatic_qat"] = True

    log("[5/5] gate and approval")
    int8_kinds = [k for k in report["variants"] if k.endswith("int8")]
    passed = [k for k in int8_kinds if report["variants"][k]["gate"]["passed"]]
    if int8_kinds and not passed:
        write_json_atomic(out / "report.json", {**report, "approved": None})
        reasons = "; ".join(f"{k}: {', '.join(report['variants'][k]['gate']['failures'])}" for k in int8_kinds)
        tried_qat = cfg.qat or report.get("automatic_qat")
        raise GateFailed(f"no int8 model approved ({reasons}); nothing written as {out / APPROVED}. "
                         + ("Quantisation-aware training was tried too; train the float model longer, use " if tried_qat
                            else "Try --qat, ")
                         + "more --representative images, or a looser --max-drop if you accept it")
    if passed:
        best = max(passed, key=lambda k: (report["variants"][k]["corrupted"]["accuracy"],
                                          report["variants"][k]["clean"]["accuracy"]))
        _approve(out / f"model_{best}.tflite", out / APPROVED)
        report["approved"] = {"variant": best, "file": APPROVED}
        log(f"      approved {best} -> {out / APPROVED}")
        if cfg.edgetpu:
            report["edgetpu"] = _edgetpu(out / APPROVED, out, compiler, sc, src_path, cfg, log)
    write_json_atomic(out / "report.json", report)
    write_bytes_atomic(out / "report.md", markdown(report).encode())
    return report


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


def _approve(variant: Path, dest: Path) -> None:
    from scopelite.edge.bundle import copy_bundle, load_sidecar  # noqa: PLC0415

    copy_bundle(variant, dest, approved_from=variant.name, gate=load_sidecar(variant).metrics.get("gate"))


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
    tpu_sc = replace(base, file=compiled.name, sha256=sha256_file(compiled), runtimes=("edgetpu",),
                     provenance={**base.provenance, "edgetpu_compiler": parsed, "cpu_model": model.name})
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
                     f"{'' if g is None else ('pass' if g['passed'] else 'FAIL: ' + '; '.join(g['failures']))} |")
    for k, v in report["variants"].items():
        if "top1_agreement_keras_qat_vs_tflite" in v:
            lines += ["", f"{k}: the TFLite int8 model and its Keras QAT model agree on "
                          f"{100 * v['top1_agreement_keras_qat_vs_tflite']:.2f} % of test images (top-1)."]
    if report.get("approved"):
        lines += ["", f"Approved: **{report['approved']['variant']}** -> `{report['approved']['file']}`"]
    return "\n".join(lines) + "\n"
