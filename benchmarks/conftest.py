"""Latency benchmarks: `pytest benchmarks/` (add --model M.tflite to time your own int8 bundle).

Each run writes benchmarks/results/<machine>-<date>.json with the machine, the
runtime versions and every figure (median and p99 over many runs, warm-up excluded).
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from pathlib import Path

import numpy as np
import pytest

RESULTS = Path(__file__).parent / "results"


def pytest_addoption(parser):
    parser.addoption("--model", default=None, help="An int8 .tflite bundle to time (default: build one).")
    parser.addoption("--runs", type=int, default=200, help="Timed runs per figure.")
    parser.addoption("--no-write", action="store_true", help="Do not write benchmarks/results/*.json.")
    parser.addoption("--soak", type=int, default=0, help="Run the daemon soak test for this many seconds (600).")
    parser.addoption("--accuracy", action="store_true", help="Run the accuracy benchmarks (need real data).")
    parser.addoption("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                     help="Folder with pbc96/ and pbc-fields/ for --accuracy.")
    parser.addoption("--assert-ratios", action="store_true",
                     help="Fail when a same-run ratio misses its goal (int8 >= 3x float32, >= 20x Keras, "
                          "daemon >= 90 %% of bare invoke).")


def measure(fn, runs: int, warmup: int = 10) -> dict:
    for _ in range(warmup):
        fn()
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - t0
    t *= 1e3
    return {"p50_ms": round(float(np.median(t)), 4), "p99_ms": round(float(np.percentile(t, 99)), 4),
            "mean_ms": round(float(t.mean()), 4), "runs": runs}


def machine() -> dict:
    from scopelite.edge import runtime
    from scopelite.edge.sysinfo import machine as base

    return {**base(), "runtime": runtime.runtime_name()}


class Recorder:
    def __init__(self):
        self.rows: dict[str, dict] = {}

    def add(self, name: str, **figures) -> None:
        self.rows[name] = figures


@pytest.fixture(scope="session")
def record(request):
    rec = Recorder()
    yield rec
    if not rec.rows:
        return
    print("\n\nbenchmark                              p50 ms    p99 ms   extra")
    for name, f in rec.rows.items():
        extra = {k: v for k, v in f.items() if k not in ("p50_ms", "p99_ms", "mean_ms", "runs")}
        print(f"{name:<38} {f.get('p50_ms', float('nan')):>8.3f}  {f.get('p99_ms', float('nan')):>8.3f}   {extra}")
    if request.config.getoption("--no-write"):
        return
    m = machine()
    now = dt.datetime.now(dt.timezone.utc)
    RESULTS.mkdir(exist_ok=True)
    name = f"{m['arch']}-{m['cores']}core-{now:%Y-%m-%d}.json"
    command = "pytest " + shlex.join(request.config.invocation_params.args)  # quoted: it can be pasted back
    path = RESULTS / name
    old = json.loads(path.read_text()) if path.is_file() else {}
    out = merge_day(old, rec.rows, m, now.isoformat(timespec="seconds"), command)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten to {RESULTS / name}")


def merge_day(old: dict, rows: dict, machine: dict, date: str, command: str) -> dict:
    """One file per machine and day: a later run (say, only the soak test) adds its rows, it does not erase. A row
    measured on another CPU of the same arch and cores (a virtual machine moved to another host) keeps its own
    ``machine`` and ``date``: the file's are the newest run's, and an AMD figure was once filed under an Intel CPU."""
    kept = {}
    for k, v in old.get("results", {}).items():
        v = {**v, "command": v.get("command", old.get("command", ""))}
        if "machine" not in v and old.get("machine") not in (None, machine):
            v.update(machine=old["machine"], date=old.get("date"))
        kept[k] = v
    kept.update({k: {**v, "command": command} for k, v in rows.items()})
    return {"date": date, "machine": machine, "results": kept}


@pytest.fixture(scope="session")
def models(request, tmp_path_factory):
    """{variant: path}: the given bundle, or EfficientNetV2B0 at 96x96 converted here to every
    variant (untrained weights: latency does not depend on their values), plus the Keras model."""
    given = request.config.getoption("--model")
    if given:
        return {"int8": Path(given), "keras": None}
    from scopelite.compress import convert, qat
    from scopelite.train.model import build

    d = tmp_path_factory.mktemp("bench")
    model = build("efficientnetv2b0", 96, 8, "none", batch_size=1)
    rep = np.random.default_rng(0).integers(0, 256, (32, 96, 96, 3), dtype=np.uint8)
    q = qat.quantize(model)
    qat.pin_input_range(q)
    blobs = {"int8": convert.to_int8(model, rep), "qat_int8": convert.to_int8(q, rep),
             "float32": convert.to_float32(model), "float16": convert.to_float16(model),
             "dynamic_range": convert.to_dynamic_range(model)}
    out = {"keras": model}
    for k, b in blobs.items():
        (d / f"{k}.tflite").write_bytes(b)
        out[k] = d / f"{k}.tflite"
    return out


@pytest.fixture(scope="session")
def bundle(request):
    """An int8 bundle (file + sidecar) for the daemon benchmarks: --model, else the packaged model,
    else the int8 EfficientNetV2B0 built here with a sidecar written for it (only then are the
    ``models`` built: minutes of TensorFlow the daemon benchmarks need not wait for)."""
    if request.config.getoption("--model"):
        return Path(request.config.getoption("--model"))
    from scopelite.edge.packaged import default_model
    from scopelite.edge.errors import UserError

    try:
        return default_model()
    except UserError:
        pass
    from scopelite.edge import runtime
    from scopelite.edge.bundle import (CLASS_NAMES, InputSpec, Provenance, Quantization, TensorSpec,
                                       build_sidecar, write_sidecar)

    path = request.getfixturevalue("models")["int8"]
    it = runtime.make_interpreter(path)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    write_sidecar(path, build_sidecar(
        path, format="tflite", labels=CLASS_NAMES,
        input=InputSpec(height=96, width=96, channels=3, dtype="uint8", layout="NHWC", color="RGB",
                        value_range=(0, 255), normalization="in-graph", crop="center", interpolation="area",
                        quantization=Quantization(*i["quantization"]), rbc_px=None),
        output=TensorSpec("uint8", Quantization(*o["quantization"])), runtimes=("cpu",),
        provenance=Provenance(notes={"made_by": "benchmarks/conftest.py: untrained weights, for latency only"})))
    return path
