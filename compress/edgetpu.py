"""Edge TPU: an offline compatibility report, and the `edgetpu_compiler` when one is installed.

The compiler exists only for x86-64 Debian (Coral's apt repository). Without
it, ``compatibility`` walks the int8 graph and checks every op against the
Edge TPU's documented constraints, predicting where the compiler would cut the
graph: it maps ops in execution order until the first one it cannot run;
that op and everything after it run on the CPU.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from scopelite.edge import runtime
from scopelite.edge.errors import UserError

# https://coral.ai/docs/edgetpu/models-intro/#supported-operations (compiler 16)
SUPPORTED_OPS = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL",
    "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "GATHER",
}
QUANTIZED = ("int8", "uint8")
COMPILER = "edgetpu_compiler"
INSTALL_HINT = ("edgetpu_compiler is not installed (x86-64 Debian/Ubuntu only): "
                "https://coral.ai/docs/edgetpu/compiler/#system-requirements")


def _problems(op: dict, tensors: dict[int, dict], activations: set[int]) -> list[str]:
    out = []
    name = op["op_name"]
    if name not in SUPPORTED_OPS:
        out.append(f"{name} is not an Edge TPU op")
    for idx in list(op["inputs"]) + list(op["outputs"]):
        if idx < 0:
            continue
        t = tensors[idx]
        dtype = np.dtype(t["dtype"]).name
        is_bias = dtype == "int32" and name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
        is_axis = dtype == "int32" and name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "PAD")
        if dtype not in QUANTIZED and not (is_bias or is_axis) and not (name == "QUANTIZE" and dtype == "float32"):
            out.append(f"tensor {t['name']!r} is {dtype}, not 8-bit")
        sig = t.get("shape_signature", t["shape"])
        if any(int(d) < 0 for d in sig):
            out.append(f"tensor {t['name']!r} has a dynamic shape {list(sig)}")
        shape = [int(d) for d in t["shape"]]
        if idx not in activations:  # constant weights: [out, kh, kw, in] is fine
            continue
        if len(shape) == 4 and shape[0] != 1:
            out.append(f"tensor {t['name']!r} has batch {shape[0]}, not 1")
        if len(shape) > 3 and sum(d > 1 for d in shape[:-3]) > 0:
            out.append(f"tensor {t['name']!r} {shape}: only the 3 innermost dimensions may exceed 1")
    return out


def compatibility(model_path: str | os.PathLike) -> dict:
    """Predict the Edge TPU mapping of an int8 ``.tflite`` without the compiler.

    Returns:
        {"ops": n, "mappable": k, "first_unmapped": index or None, "tpu_ops": ..., "cpu_ops": ...,
         "predicted_subgraphs": 1 or 0, "problems": [{"index", "op", "why"}], "fully_mapped": bool}
    """
    interp = runtime.make_interpreter(model_path, plain=True)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = runtime.graph_ops(interp)
    activations = {i for op in ops for i in op["outputs"]} | {d["index"] for d in interp.get_input_details()}
    problems, first = [], None
    for i, op in enumerate(ops):
        why = _problems(op, tensors, activations)
        if why:
            problems.append({"index": i, "op": op["op_name"], "why": why})
            if first is None:
                first = i
    tpu = len(ops) if first is None else first
    return {
        "ops": len(ops),
        "mappable": len(ops) - len(problems),
        "tpu_ops": tpu,
        "cpu_ops": len(ops) - tpu,
        "first_unmapped": first,
        "predicted_subgraphs": 1 if tpu else 0,
        "fully_mapped": first is None,
        "problems": problems[:50],
    }


def find_compiler(explicit: str | None = None) -> str | None:
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise UserError(f"--compiler {explicit}: not an executable file")
        return os.path.abspath(explicit)  # a bare name in the folder: subprocess looks it up on PATH, not here
    return shutil.which(COMPILER)


_NUM = r"([\d.]+)\s*([KMG]?i?B)"


def _bytes(value: str, unit: str) -> int:
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
    return int(float(value) * scale.get(unit, 1))


def parse_log(text: str) -> dict:
    """The compiler's summary: ops on the TPU and the CPU, subgraphs, memory, per-op status."""
    def grab(pattern, cast=int):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    out = {
        "tpu_ops": grab(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
        "cpu_ops": grab(r"Number of operations that will run on CPU:\s*(\d+)"),
        "subgraphs": grab(r"Number of Edge TPU subgraphs:\s*(\d+)"),
        "compiler_version": grab(r"Edge TPU Compiler version\s*(\S+)", str),
    }
    for key, label in (("on_chip_bytes", "On-chip memory used for caching model parameters"),
                       ("off_chip_bytes", "Off-chip memory used for streaming uncached model parameters")):
        m = re.search(label + r":\s*" + _NUM, text)
        out[key] = _bytes(*m.groups()) if m else None
    table = []
    for m in re.finditer(r"^(\w+)\s+(\d+)\s+(Mapped to Edge TPU|.+?)\s*$", text, re.M):
        if m.group(1) in ("Operator", "Number"):
            continue
        table.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    out["operators"] = table
    return out


def compile_model(model_path: str | os.PathLike, out_dir: str | os.PathLike, compiler: str) -> tuple[Path, dict]:
    """Run ``compiler -s -o out_dir model``; return the compiled file and the parsed log."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run([compiler, "-s", "-o", str(out_dir), str(model_path)], capture_output=True, text=True,
                           errors="replace",  # a compiler printing bytes that are not UTF-8 gave a traceback
                           timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"{compiler} failed to run: {e}") from None
    log = r.stdout + r.stderr
    compiled = out_dir / f"{model_path.stem}_edgetpu.tflite"
    if r.returncode != 0 or not compiled.is_file():
        last = (log.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{compiler} could not compile {model_path.name}: {last}")
    (out_dir / f"{model_path.stem}_edgetpu.log").write_text(log)
    return compiled, parse_log(log)
