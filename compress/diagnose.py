"""Where a full-int8 model loses its float model's answers: ``cellcompress --int8 --diagnose``.

Two measurements, written as ``int8-diagnosis.{csv,json,png}``:

* **Per tensor** (execution order): the int8 graph and the float32 graph of the same batch-1
  network run on the same images with every intermediate tensor kept; each int8 activation is
  dequantised and compared with its float twin (matched by tensor name). The error is
  *accumulated* (what the int8 model really computes at that point, all earlier rounding
  included): ``nrmse`` = RMSE / std of the float tensor (0.01 is harmless, 1.0 is noise), and
  ``rmse_over_scale`` = RMSE in quantisation steps (about 0.29 when only the tensor's own
  rounding counts). Beside it the tensor's float range and std and the int8 range its scale
  covers: ``range_over_std`` says how many standard deviations share the 256 levels (a
  heavy-tailed tensor with a wide range gives its typical values only a few levels), and
  ``calibrated_over_seen`` how much wider the calibrated int8 range is than the range these
  images reach (well above 1: calibration saw values the images never produce).
  ``op_rmse_over_scale`` is each op's *own* error, from TensorFlow's QuantizationDebugger (the
  int8 op against the float op fed the same dequantised input): about 0.29 steps when the op
  rounds as it should, so a single broken op stands out from error that merely accumulates.
* **Per BatchNormalization layer**: the moving statistics the model carries against those of
  the training images as the model computes them now (a copy re-estimated on the calibration
  images). After very short training they disagree (``var_ratio`` far from 1): the float model
  then runs on activations it never normalised, their ranges grow block after block, and int8
  has to cover them.

Pure helpers (row kinds, the summary) are apart from the TensorFlow/LiteRT work.
"""
from __future__ import annotations

import contextlib
import csv
import io
import warnings
from pathlib import Path

import numpy as np

from scopelite.edge.bundle import write_bytes_atomic, write_json_atomic

FILES = ("int8-diagnosis.json", "int8-diagnosis.csv", "int8-diagnosis.png")
COLUMNS = ("index", "op", "kind", "layer", "tensor", "scale", "zero_point", "int8_min", "int8_max",
           "float_min", "float_max", "float_std", "range_over_std", "calibrated_over_seen", "clipped", "rmse", "rmse_over_scale",
           "op_rmse_over_scale", "nrmse", "cosine")
ISOLATED_IMAGES = 16  # QuantizationDebugger: each op's own error settles on few images
NRMSE_NOTICEABLE, NRMSE_BAD = 0.1, 0.3
BN_OFF = 2.0  # moving variance off by this factor (either way) from the measured one: not settled


# ---------------------------------------------------------------- pure helpers

def short_name(tensor: str) -> str:
    """'efficientnetv2b0/top_bn/FusedBatchNormV3;efficientnetv2b0/top_conv/Conv2D' -> 'top_bn/FusedBatchNormV3'."""
    first = tensor.split(";")[0]
    return first.split("/", 1)[1] if first.count("/") > 1 else first


def layer_of(tensor: str) -> str:
    """Keras layer of a TFLite tensor name: 'model/block4a_se_reduce/BiasAdd;...' -> 'block4a_se_reduce'."""
    first = tensor.split(";")[0]
    parts = first.split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def kind_of(op: str, tensor: str) -> str:
    """What part of an EfficientNet block a tensor belongs to (for the table and the plot)."""
    layer = layer_of(tensor)
    rest = tensor.split(";")[0]
    if "_se_" in layer:
        return "swish" if rest.endswith(("/Sigmoid", "/mul_1")) else "squeeze-excite"
    if op == "LOGISTIC" or "activation" in layer:
        return "swish"
    if op == "ADD" and layer.endswith("_add"):
        return "residual add"
    if layer in ("normalize",):
        return "input"
    if op in ("MEAN", "FULLY_CONNECTED", "SOFTMAX") or layer in ("avg_pool", "predictions") or "/" not in rest:
        return "head"
    return "conv+bn"


def row_metrics(q: np.ndarray, f: np.ndarray, scale: float, zero_point: int) -> dict:
    """Error of dequantised int8 values ``q`` against their float twin ``f`` (same shape), and range figures."""
    q, f = q.astype(np.float64).ravel(), f.astype(np.float64).ravel()
    lo, hi = scale * (-128 - zero_point), scale * (127 - zero_point)
    std = float(f.std())
    rmse = float(np.sqrt(np.mean((q - f) ** 2)))
    denom = float(np.linalg.norm(q) * np.linalg.norm(f))
    return {"scale": scale, "zero_point": zero_point, "int8_min": lo, "int8_max": hi,
            "float_min": float(f.min()), "float_max": float(f.max()), "float_std": std,
            "range_over_std": (hi - lo) / std if std > 0 else None,
            "calibrated_over_seen": (hi - lo) / float(f.max() - f.min()) if f.max() > f.min() else None,
            "clipped": float(np.mean((f < lo - scale / 2) | (f > hi + scale / 2))),
            "rmse": rmse, "rmse_over_scale": rmse / scale if scale else None,
            "nrmse": rmse / std if std > 0 else None, "cosine": float(q @ f / denom) if denom > 0 else None}


def summarize(rows: list[dict], batchnorm: list[dict], agreement: float | None) -> dict:
    """The findings in a few numbers and sentences (``rows`` in execution order)."""
    scored = [r for r in rows if r.get("nrmse") is not None]
    first = {}
    for level in (NRMSE_NOTICEABLE, NRMSE_BAD):
        hit = next((r for r in scored if r["nrmse"] > level), None)
        first[str(level)] = None if hit is None else {"index": hit["index"], "tensor": hit["tensor"], "kind": hit["kind"],
                                                      "nrmse": hit["nrmse"]}
    by_kind = {}
    for r in scored:
        by_kind.setdefault(r["kind"], []).append(r["nrmse"])
    adds = [r for r in rows if r["kind"] == "residual add"]
    unsettled = [b for b in batchnorm if b["var_ratio"] > BN_OFF or b["var_ratio"] < 1 / BN_OFF]
    own = [r for r in rows if r.get("op_rmse_over_scale") is not None]
    worst_own = max(own, key=lambda r: r["op_rmse_over_scale"]) if own else None
    last = scored[-1] if scored else None
    lines = []
    if agreement is not None:
        lines.append(f"int8 and float agree on the top class of {100 * agreement:.1f} % of the images compared")
    if last:
        lines.append(f"error at the classifier ({last['tensor']}): {last['nrmse']:.2f} of the float tensor's std")
    if first[str(NRMSE_BAD)]:
        f = first[str(NRMSE_BAD)]
        lines.append(f"the error passes {NRMSE_BAD} of the signal first at #{f['index']} {f['tensor']} ({f['kind']})")
    if worst_own:
        lines.append(f"each op's own error: median {np.median([r['op_rmse_over_scale'] for r in own]):.2f} "
                     f"quantisation steps (0.29 is rounding alone), worst {worst_own['op_rmse_over_scale']:.2f} at "
                     f"{worst_own['tensor']}")
    ratios = [r["calibrated_over_seen"] for r in rows if r.get("calibrated_over_seen") and r["op"] != "LOGISTIC"]
    if ratios:
        widest = max((r for r in rows if r.get("calibrated_over_seen") and r["op"] != "LOGISTIC"),
                     key=lambda r: r["calibrated_over_seen"])
        lines.append(f"calibrated int8 ranges are {np.median(ratios):.2f}x the range these images reach (median; "
                     f"widest {widest['calibrated_over_seen']:.2f}x at {widest['tensor']})")
    wide = max((r for r in rows if r.get("range_over_std") and r["op"] != "LOGISTIC"),
               key=lambda r: r["range_over_std"], default=None)
    if wide:
        lines.append(f"widest range for its values: {wide['tensor']} ({wide['kind']}) spans "
                     f"{wide['range_over_std']:.0f} standard deviations, {255 / wide['range_over_std']:.1f} int8 "
                     "steps per standard deviation")
    if len(adds) >= 2:
        lines.append(f"residual stream: max |x| {max(abs(adds[0]['float_min']), adds[0]['float_max']):.3g} at "
                     f"{adds[0]['layer']} -> {max(abs(adds[-1]['float_min']), adds[-1]['float_max']):.3g} at "
                     f"{adds[-1]['layer']} (std {adds[0]['float_std']:.3g} -> {adds[-1]['float_std']:.3g})")
    if batchnorm:
        worst = max(batchnorm, key=lambda b: abs(np.log(b["var_ratio"])))
        lines.append(f"{len(unsettled)} of {len(batchnorm)} BatchNorm layers carry a moving variance more than "
                     f"{BN_OFF:g}x off the training images' (worst {worst['layer']}: {worst['var_ratio']:.3g}x)")
    return {
        "top1_agreement": agreement,
        "final_nrmse": last["nrmse"] if last else None,
        "first_nrmse_over": first,
        "median_nrmse_by_kind": {k: float(np.median(v)) for k, v in sorted(by_kind.items())},
        "worst_range_over_std": sorted(({"tensor": r["tensor"], "kind": r["kind"], "range_over_std": r["range_over_std"]}
                                        for r in rows if r.get("range_over_std")),
                                       key=lambda d: -d["range_over_std"])[:5],
        "op_error_steps": None if not own else {
            "median": float(np.median([r["op_rmse_over_scale"] for r in own])),
            "max": worst_own["op_rmse_over_scale"], "max_at": worst_own["tensor"]},
        "median_calibrated_over_seen": float(np.median(ratios)) if ratios else None,
        "batchnorm_unsettled": len(unsettled),
        "batchnorm_layers": len(batchnorm),
        "findings": lines,
    }


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


# ---------------------------------------------------------------- measurement

def _interpreter(blob: bytes):
    from scopelite.edge import runtime  # noqa: PLC0415  (the one import point of LiteRT)

    return runtime.make_interpreter(None, plain=True, model_content=blob, keep_all_tensors=True)


def _quantize_input(img: np.ndarray, detail: dict) -> np.ndarray:
    """Raw pixels as the int8 graph's input tensor takes them (uint8 or int8, its scale and zero point)."""
    scale, zp = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(img.astype(np.float32) / (scale or 1.0)) + zp
    return np.clip(q, info.min, info.max).astype(detail["dtype"])[None]


def tensor_errors(int8_blob: bytes, float_blob: bytes, images: np.ndarray) -> tuple[list[dict], float]:
    """Per-tensor accumulated error of the int8 graph against the float32 graph on ``images``
    (uint8, N x H x W x 3), in the int8 graph's execution order; and their top-1 agreement."""
    a, b = _interpreter(int8_blob), _interpreter(float_blob)
    details_a = {d["index"]: d for d in a.get_tensor_details()}
    float_idx = {d["name"]: d["index"] for d in b.get_tensor_details()}
    order = []  # (op index, op name, int8 tensor detail, float tensor index)
    for op in a._get_ops_details():  # noqa: SLF001 - LiteRT's only way to walk the graph
        for t in op["outputs"]:
            d = details_a[int(t)]
            if d["name"] in float_idx and d["quantization"][0]:
                order.append((op["index"], op["op_name"], d, float_idx[d["name"]]))
    (ia,), (ib,) = a.get_input_details(), b.get_input_details()
    (oa,), (ob,) = a.get_output_details(), b.get_output_details()
    got = {i: ([], []) for i, *_ in order}
    top_a, top_b = [], []
    for img in images:
        a.set_tensor(ia["index"], _quantize_input(img, ia))
        b.set_tensor(ib["index"], img[None].astype(np.float32))
        a.invoke()
        b.invoke()
        for i, _, d, fi in order:
            s, zp = d["quantization"]
            got[i][0].append((a.get_tensor(d["index"]).astype(np.float32) - zp) * s)
            got[i][1].append(b.get_tensor(fi).copy())
        top_a.append(int(np.argmax(a.get_tensor(oa["index"]))))
        top_b.append(int(np.argmax(b.get_tensor(ob["index"]))))
    rows = []
    for i, op, d, _ in order:
        s, zp = d["quantization"]
        name = d["name"]
        rows.append({"index": int(i), "op": op, "kind": kind_of(op, d["name"]), "layer": layer_of(d["name"]),
                     "tensor": short_name(name),
                     **row_metrics(np.stack(got[i][0]), np.stack(got[i][1]), float(s), int(zp))})
    return rows, float(np.mean(np.array(top_a) == np.array(top_b)))


def isolated_errors(model_batch1, representative: np.ndarray, images: np.ndarray,
                    anchor: np.ndarray | None = None) -> dict[str, float]:
    """Each op's own int8 error in quantisation steps (RMSE / scale), by :func:`short_name`, from
    TensorFlow's QuantizationDebugger: the converter's graph with a float twin of every op fed the
    same dequantised input (``tf.lite.experimental.QuantizationDebugger``)."""
    from scopelite.edge._quiet import native_stderr  # noqa: PLC0415
    from scopelite.train._keras import tf  # noqa: PLC0415

    from . import convert  # noqa: PLC0415

    conv = convert.int8_converter(model_batch1, representative, io_dtype=None, anchor=anchor)  # it feeds float

    def data():
        for img in images:
            yield [img[None].astype(np.float32)]

    with native_stderr(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it runs tf.lite.Interpreter, which warns that it is deprecated
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=data)
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    out = {}
    for r in csv.DictReader(buf.getvalue().splitlines()):
        scale = float(r["scale"] or 0)
        if scale > 0:
            out[short_name(r["tensor_name"])] = float(np.sqrt(float(r["mean_squared_error"]))) / scale
    return out


def batchnorm_drift(model, images: np.ndarray, batch_size: int = 32, batches: int = 16, seed: int = 0) -> list[dict]:
    """Each BatchNormalization layer's moving statistics against those measured on ``images`` by a
    copy of ``model`` (re-estimated as ``celltrain average`` does); ``model`` is left unchanged."""
    from scopelite.train._keras import keras  # noqa: PLC0415
    from scopelite.train.average import recalibrate_on_sample  # noqa: PLC0415

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    recalibrate_on_sample(copy, images, batch_size, batches=batches, seed=seed)
    out = []
    for old, new in zip(model.layers, copy.layers):
        if not isinstance(old, keras.layers.BatchNormalization):
            continue
        mv, nv = old.moving_variance.numpy(), new.moving_variance.numpy()
        mm, nm = old.moving_mean.numpy(), new.moving_mean.numpy()
        out.append({"layer": old.name,
                    "var_ratio": float(np.median((mv + old.epsilon) / (nv + old.epsilon))),
                    "mean_shift_std": float(np.median(np.abs(mm - nm) / np.sqrt(nv + old.epsilon)))})
    return out


def plot(rows: list[dict], batchnorm: list[dict], path: Path, title: str) -> None:
    """Accumulated error, calibrated range over the range reached, and the BatchNorm check, against depth."""
    from scopelite.train._plot import pyplot, save  # noqa: PLC0415

    plt = pyplot()
    fig, axes = plt.subplots(3 if batchnorm else 2, 1, figsize=(11, 9 if batchnorm else 6.5))
    kinds = sorted({r["kind"] for r in rows})
    colours = dict(zip(kinds, plt.get_cmap("tab10").colors))
    for k in kinds:
        pts = [(n, r) for n, r in enumerate(rows) if r["kind"] == k]
        err = [(n, r["nrmse"]) for n, r in pts if r["nrmse"] is not None]
        wide = [(n, r["calibrated_over_seen"]) for n, r in pts if r.get("calibrated_over_seen") and r["op"] != "LOGISTIC"]
        axes[0].scatter([n for n, _ in err], [v for _, v in err], s=9, color=colours[k], label=k)
        axes[1].scatter([n for n, _ in wide], [v for _, v in wide], s=9, color=colours[k])
    axes[0].axhline(NRMSE_BAD, color="grey", lw=0.8, ls="--")
    axes[0].set(ylabel="int8 error / float std\n(accumulated)", yscale="log", title=title)
    axes[0].legend(fontsize=7, ncol=len(kinds), loc="upper left")
    axes[1].axhline(1, color="grey", lw=0.8)
    axes[1].set(ylabel="calibrated int8 range /\nrange the images reach", yscale="log",
                xlabel="tensor (execution order)")
    if batchnorm:
        axes[2].bar(range(len(batchnorm)), [b["var_ratio"] for b in batchnorm], color="tab:purple")
        axes[2].axhline(1, color="grey", lw=0.8)
        axes[2].set(ylabel="moving var / measured var", xlabel="BatchNormalization layer (depth order)")
    fig.tight_layout()
    save(fig, path)


def diagnose(model_batch1, int8_blob: bytes, images: np.ndarray, calibration: np.ndarray, out: Path,
             context: dict | None = None, log=print, anchor: np.ndarray | None = None) -> dict:
    """Measure, write ``int8-diagnosis.{json,csv,png}`` into ``out``, return the summary.

    Args:
        model_batch1: the float Keras model the int8 one was converted from (fixed batch of 1).
        int8_blob: the post-training int8 flatbuffer.
        images: uint8 images to compare on (a few dozen held-out ones).
        calibration: uint8 training images (for the BatchNorm statistics).
        context: written into the JSON as is (model, command, machine, date...).
        anchor: the first calibration image ``int8_blob`` was converted with, if not the default.
    """
    from . import convert  # noqa: PLC0415

    log(f"      int8 diagnosis: every tensor of int8 vs float on {len(images)} images; BatchNorm statistics "
        f"on {len(calibration)} training images")
    rows, agreement = tensor_errors(int8_blob, convert.to_float32(model_batch1), images)
    try:
        own = isolated_errors(model_batch1, calibration, images[:ISOLATED_IMAGES], anchor)
    except Exception as e:  # noqa: BLE001 - an experimental TensorFlow API: the rest still stands
        log(f"      (no per-op error: TensorFlow's QuantizationDebugger failed: {type(e).__name__}: {e})")
        own = {}
    for r in rows:
        r["op_rmse_over_scale"] = own.get(r["tensor"])
    bn = batchnorm_drift(model_batch1, calibration, batch_size=min(32, len(calibration)))
    summary = summarize(rows, bn, agreement)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / FILES[0], {**(context or {}), "summary": summary, "tensors": rows, "batchnorm": bn})
    write_bytes_atomic(out / FILES[1], to_csv(rows).encode())
    plot(rows, bn, out / FILES[2], f"int8 vs float, per tensor ({len(images)} images)")
    for line in summary["findings"]:
        log(f"      - {line}")
    log(f"      -> {out / FILES[0]} (.csv, .png)")
    return summary
