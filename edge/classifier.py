"""Classifiers: something that turns a batch of prepared crops into scores.

``LiteRTClassifier`` runs a bundle (``.tflite`` + sidecar) on the CPU or the
Edge TPU; ``FakeClassifier`` stands in for tests. Both give probabilities as
float64 arrays of shape (N, len(labels)).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from . import runtime
from .bundle import BundleError, InputSpec, Sidecar, load_sidecar
from .postprocess import dequantize


class Classifier(Protocol):
    labels: Sequence[str]
    input_spec: InputSpec

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N,H,W,3) crops -> (N, C) class probabilities."""


_NP_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32}


def quantize_input(pixels: np.ndarray, dtype: str, scale: float | None, zero_point: int | None) -> np.ndarray:
    """Raw 0..255 pixels -> the model's input tensor: q = round(x / scale) + zero_point, clipped."""
    np_dtype = _NP_DTYPES[dtype]
    if dtype == "float32":
        return pixels.astype(np.float32)
    if scale == 1.0 and zero_point == 0 and dtype == "uint8":
        return pixels.astype(np.uint8, copy=False)
    info = np.iinfo(np_dtype)
    q = np.round(pixels.astype(np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(np_dtype)


class LiteRTClassifier:
    """A ``.tflite`` bundle on the LiteRT interpreter (CPU or Edge TPU)."""

    def __init__(self, model_path: str | os.PathLike, num_threads: int | None = None,
                 device: str | None = None, sidecar: Sidecar | None = None):
        self.path = Path(model_path)
        self.sidecar = sidecar or load_sidecar(self.path)
        if self.sidecar.format != "tflite":
            raise BundleError(f"{self.path} is a {self.sidecar.format} model; celledge runs .tflite bundles (use cellcompress)")
        if device is not None and "edgetpu" not in self.sidecar.runtimes:
            raise BundleError(
                f"{self.path} is not compiled for the Edge TPU (sidecar runtimes: {', '.join(self.sidecar.runtimes)}); "
                "use the *_edgetpu.tflite model, or --fallback cpu"
            )
        self.labels = self.sidecar.labels
        self.input_spec = self.sidecar.input
        self.interpreter = runtime.make_interpreter(self.path, num_threads=num_threads, edgetpu_device=device)
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self._check_against_sidecar()

    def _check_against_sidecar(self) -> None:
        spec, sc = self.input_spec, self.sidecar
        want = [1, spec.height, spec.width, spec.channels]
        got = [int(v) for v in self._in["shape"]]
        if got != want:
            raise BundleError(f"{self.path}: model input shape {got} but sidecar says {want}")
        if np.dtype(self._in["dtype"]).name != spec.dtype:
            raise BundleError(f"{self.path}: model input dtype {np.dtype(self._in['dtype']).name} but sidecar says {spec.dtype}")
        n_out = int(np.prod(self._out["shape"]))
        if n_out != len(sc.labels):
            raise BundleError(f"{self.path}: model gives {n_out} outputs but the sidecar lists {len(sc.labels)} labels")
        if np.dtype(self._out["dtype"]).name != sc.output.dtype:
            raise BundleError(f"{self.path}: model output dtype {np.dtype(self._out['dtype']).name} but sidecar says {sc.output.dtype}")
        for det, q, name in ((self._in, spec.quantization, "input"), (self._out, sc.output.quantization, "output")):
            if q is None:
                continue
            scale, zp = det["quantization"]
            if not np.isclose(scale, q.scale, rtol=1e-5) or int(zp) != q.zero_point:
                raise BundleError(f"{self.path}: {name} quantization ({scale}, {zp}) differs from sidecar ({q.scale}, {q.zero_point})")

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run one already-quantised (1,H,W,3) tensor; return the raw output."""
        self.interpreter.set_tensor(self._in["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"])

    def prepare_tensor(self, crop: np.ndarray) -> np.ndarray:
        q = self.input_spec.quantization
        return quantize_input(crop[None], self.input_spec.dtype, q.scale if q else None, q.zero_point if q else None)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        out = np.empty((len(crops), len(self.labels)), dtype=np.float64)
        q = self.sidecar.output.quantization
        for i, crop in enumerate(crops):
            raw = self.invoke(self.prepare_tensor(crop)).reshape(-1)
            out[i] = dequantize(raw, q.scale, q.zero_point) if q else raw.astype(np.float64)
        return out

    def latency_ms(self, runs: int = 50, warmup: int = 5) -> dict:
        """Median/p99 invoke latency on a fixed random crop (warm-up excluded)."""
        rng = np.random.default_rng(0)
        crop = rng.integers(0, 256, (self.input_spec.height, self.input_spec.width, 3), dtype=np.uint8)
        t = self.prepare_tensor(crop)
        for _ in range(warmup):
            self.invoke(t)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.invoke(t)
            times.append((time.perf_counter() - t0) * 1e3)
        return {"p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99)), "runs": runs}


class FakeClassifier:
    """Test stand-in: ``fn(crops) -> scores``; default scores by mean brightness."""

    def __init__(self, labels: Sequence[str], input_spec: InputSpec,
                 fn: Callable[[np.ndarray], np.ndarray] | None = None):
        self.labels = list(labels)
        self.input_spec = input_spec
        self.calls = 0
        self._fn = fn

    def classify(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self._fn is not None:
            return np.asarray(self._fn(crops), dtype=np.float64)
        idx = (crops.reshape(len(crops), -1).mean(axis=1) / 256 * len(self.labels)).astype(int)
        return np.eye(len(self.labels))[idx]


def scores_by_colour(crops: np.ndarray, n_classes: int) -> np.ndarray:
    """A stand-in classifier for counting tests and tools (``FakeClassifier(fn=...)``): a class and a sureness (0.65)
    from each crop's mean colour, so that a scan holds a mix of classes, as a slide does."""
    m = crops.reshape(len(crops), -1, 3).mean(axis=1)
    idx = (m[:, 0] * 7 + m[:, 2] * 3).astype(int) % n_classes
    out = np.full((len(crops), n_classes), 0.05)
    out[np.arange(len(crops)), idx] = 0.65
    return out


def make_classifier(model: str | os.PathLike, num_threads: int | None = None, device: str | None = None,
                    fallback: str | None = None, warn=lambda msg: None) -> LiteRTClassifier:
    """Pick the runtime from the sidecar and ``device``; fall back to the CPU model if asked.

    Args:
        device: None (from the sidecar: an Edge TPU-only model goes to any TPU), "cpu",
            or an Edge TPU: "usb", "pci", ":0", ":1"...
        fallback: "cpu" to run the plain int8 model beside an Edge TPU model when no TPU loads.
    """
    from .bundle import load_sidecar  # noqa: PLC0415
    from .runtime import RuntimeUnavailable  # noqa: PLC0415

    sc = load_sidecar(model)
    if device == "cpu":
        tpu = None
    elif device is None:
        tpu = "" if sc.runtimes == ("edgetpu",) else None
    else:
        tpu = device
    if tpu is not None and fallback == "cpu" and "edgetpu" not in sc.runtimes and "cpu" in sc.runtimes:
        warn(f"warning: {Path(model).name} is not compiled for the Edge TPU (sidecar runtimes: "
             f"{', '.join(sc.runtimes)}) -> running it on the CPU (--fallback cpu); for the Edge TPU give its "
             "*_edgetpu.tflite model (cellcompress --edgetpu)")
        return LiteRTClassifier(model, num_threads=num_threads, sidecar=sc)
    try:
        return LiteRTClassifier(model, num_threads=num_threads, device=tpu, sidecar=sc)
    except (RuntimeUnavailable, BundleError) as e:
        if fallback != "cpu" or tpu is None:
            raise
        cpu = sc.provenance.cpu_model
        cpu_path = Path(model).with_name(cpu) if cpu else Path(model)
        if "cpu" not in load_sidecar(cpu_path).runtimes:
            raise BundleError(f"{e}; and no CPU model to fall back to beside {model}") from None
        warn(f"warning: {e} -> running {cpu_path.name} on the CPU (--fallback cpu)")
        return LiteRTClassifier(cpu_path, num_threads=num_threads)
