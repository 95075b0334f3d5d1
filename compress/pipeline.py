"""cellcompress's work: a trained Keras bundle in, a checked int8 TFLite bundle out."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge import runtime
from scopelite.edge.bundle import (InputSpec, Quantization, Sidecar, TensorSpec, sha256_file,
                                   write_bytes_atomic, write_sidecar)
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.errors import UserError
from scopelite.train import model as model_lib
from scopelite.train._keras import versions
from scopelite.train.run import heldout_data, load_keras_bundle
from scopelite.train.metrics import summarize

from .convert import representative_indices, to_int8
from .ops import DYNAMIC_SHAPE_OPS, op_counts


@dataclass(frozen=True)
class CompressConfig:
    model: str
    out: str
    int8: bool = True
    io_dtype: str = "uint8"
    representative: int = 256
    data: str | None = None  # default: the data the run was trained on
    seed: int = 0


def classify_all(clf: LiteRTClassifier, images: np.ndarray, desc: str) -> np.ndarray:
    from tqdm import tqdm  # noqa: PLC0415

    out = np.empty((len(images), len(clf.labels)))
    for i in tqdm(range(len(images)), desc=desc, unit="img", leave=False):
        out[i] = clf.classify(images[i : i + 1])[0]
    return out


def tflite_sidecar(path: Path, interp_details: tuple[dict, dict], src: Sidecar, src_path: Path,
                   metrics: dict, cfg: CompressConfig, ops: dict) -> Sidecar:
    inp, out = interp_details

    def q(det):
        scale, zp = det["quantization"]
        return Quantization(float(scale), int(zp)) if scale else None

    return Sidecar(
        format="tflite",
        file=path.name,
        sha256=sha256_file(path),
        labels=src.labels,
        input=InputSpec(height=src.input.height, width=src.input.width, dtype=np.dtype(inp["dtype"]).name,
                        quantization=q(inp)),
        output=TensorSpec(dtype=np.dtype(out["dtype"]).name, quantization=q(out)),
        runtimes=("cpu",),
        metrics=metrics,
        provenance={
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {"file": str(src_path), "sha256": sha256_file(src_path), "format": src.format},
            "quantization": "post-training full-integer (int8 weights and activations)",
            "data": src.provenance.get("data"),
            "train_config": src.provenance.get("config"),
            "compress_config": asdict(cfg),
            "tools": versions(),
            "op_counts": ops,
            "size_bytes": path.stat().st_size,
        },
        synthetic_data=src.synthetic_data,
    )


def compress(cfg: CompressConfig, log: Callable[[str], None] = print) -> dict:
    """Quantise ``cfg.model`` to full int8, check it, and write ``cfg.out/model.tflite`` + sidecar."""
    src_path = Path(cfg.model)
    sc, model = load_keras_bundle(src_path)
    tcfg = sc.provenance["config"]
    if sc.synthetic_data:
        log("NOTE: this model was trained on SYNTHETIC data")
    log("[1/4] loading the run's data and split")
    ds, split = heldout_data(sc, src_path, cfg.data)
    train, test = ds.subset(split["train"]), ds.subset(split["test"])

    log(f"[2/4] converting to full-integer TFLite (batch 1, {cfg.io_dtype} I/O, "
        f"{cfg.representative} representative images)")
    fixed = model_lib.rebuild_for_export(model, tcfg["arch"], tcfg["image_size"], len(sc.labels))
    rep = train.images[representative_indices(train.labels, cfg.representative, cfg.seed)]
    out_path = Path(cfg.out) / "model.tflite"
    write_bytes_atomic(out_path, to_int8(fixed, rep, cfg.io_dtype))
    ops = op_counts(out_path)
    bad = [o for o in DYNAMIC_SHAPE_OPS if o in ops]
    if bad:  # would be a converter regression: the Edge TPU cannot map these
        raise UserError(f"int8 graph holds dynamic-shape ops {bad}; export with a fixed batch of 1")

    log(f"[3/4] measuring float and int8 accuracy on the held-out test split ({len(test)} images)")
    interp = runtime.make_interpreter(out_path)  # tensor details, before the sidecar exists
    details = (interp.get_input_details()[0], interp.get_output_details()[0])
    draft = tflite_sidecar(out_path, details, sc, src_path, {}, cfg, ops)
    clf = LiteRTClassifier(out_path, num_threads=2, sidecar=draft)
    p_int8 = classify_all(clf, test.images, "int8")
    p_float = model.predict(test.images.astype(np.float32), batch_size=64, verbose=0)
    m_float = summarize(test.labels, p_float, sc.labels)
    m_int8 = summarize(test.labels, p_int8, sc.labels)
    latency = {f"threads_{n}": LiteRTClassifier(out_path, num_threads=n, sidecar=draft).latency_ms() for n in (1, 2)}
    metrics = {
        "split": "test",
        "data": ds.description,
        "n": len(test),
        "float": {k: m_float[k] for k in ("accuracy", "macro_f1")},
        "int8": {k: m_int8[k] for k in ("accuracy", "macro_f1", "per_class", "confusion")},
        "top1_agreement": float((p_float.argmax(1) == p_int8.argmax(1)).mean()),
        "latency_ms": latency,
        "size_bytes": out_path.stat().st_size,
        "measured_on": _machine(),
    }
    log("[4/4] writing the sidecar")
    write_sidecar(out_path, tflite_sidecar(out_path, details, sc, src_path, metrics, cfg, ops))
    log(f"      float acc {m_float['accuracy']:.4f} | int8 acc {m_int8['accuracy']:.4f} | agreement "
        f"{metrics['top1_agreement']:.4f} | {metrics['size_bytes'] / 1e6:.2f} MB | "
        f"{latency['threads_2']['p50_ms']:.2f} ms/crop (2 threads) -> {out_path}")
    return metrics


def _machine() -> dict:
    import platform  # noqa: PLC0415

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}
