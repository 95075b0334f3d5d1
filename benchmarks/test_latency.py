"""Per-crop inference latency of the int8 model against float32 and Keras."""
import os

import numpy as np
import pytest

from conftest import measure
from scopelite.compress.ops import op_counts
from scopelite.edge import runtime


def _invoke(path, threads):
    interp = runtime.make_interpreter(path, num_threads=threads)
    d = interp.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, d["shape"], dtype=np.uint8).astype(d["dtype"])

    def run():
        interp.set_tensor(d["index"], x)
        interp.invoke()

    return run


@pytest.mark.parametrize("threads", sorted({1, 2, os.cpu_count() or 1}))
def test_int8_latency(models, record, request, threads):
    r = measure(_invoke(models["int8"], threads), request.config.getoption("--runs"))
    record.add(f"tflite int8, {threads} threads", **r, size_bytes=models["int8"].stat().st_size,
               ops=sum(op_counts(models["int8"]).values()))
    assert r["p50_ms"] > 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic_range", "qat_int8"])
def test_other_variants_latency(models, record, request, variant, threads):
    if variant not in models:
        pytest.skip(f"no {variant} model with --model")
    r = measure(_invoke(models[variant], threads), request.config.getoption("--runs"))
    ops = op_counts(models[variant])
    record.add(f"tflite {variant}, {threads} threads", **r, size_bytes=models[variant].stat().st_size,
               ops=sum(ops.values()))


@pytest.mark.edgetpu
def test_edgetpu_latency(models, record, request):
    from scopelite.edge.runtime import RuntimeUnavailable, make_interpreter

    try:
        make_interpreter(models["int8"], edgetpu_device="")
    except RuntimeUnavailable as e:
        pytest.skip(f"no Edge TPU here: {e}")
    pytest.skip("an Edge TPU loaded: time an *_edgetpu.tflite with --model (plain int8 graphs do not use it)")


def test_keras_latency(models, record, request):
    if models.get("keras") is None:
        pytest.skip("no Keras model with --model")
    x = np.zeros((1, 96, 96, 3), np.float32)
    runs = max(request.config.getoption("--runs") // 4, 10)
    record.add("keras float32 model(x)", **measure(lambda: models["keras"](x, training=False), runs))
    record.add("keras float32 predict(x)", **measure(lambda: models["keras"].predict(x, verbose=0), runs))


def test_int8_speedup(record, request):
    """Ratios measured in this run; with --assert-ratios a missed goal fails and says by how much."""
    i8, f32 = record.rows.get("tflite int8, 2 threads"), record.rows.get("tflite float32, 2 threads")
    keras = record.rows.get("keras float32 model(x)")
    if not (i8 and f32):
        pytest.skip("needs both int8 and float32 figures")
    vs_f32 = f32["p50_ms"] / i8["p50_ms"]
    record.add("speed-up int8 vs float32 (2 threads)", ratio=round(vs_f32, 2), goal=3.0)
    size_ratio = i8["size_bytes"] / f32["size_bytes"]
    record.add("size int8 / float32", ratio=round(size_ratio, 3), goal=0.30)
    if keras:
        record.add("speed-up int8 vs Keras model(x)", ratio=round(keras["p50_ms"] / i8["p50_ms"], 1), goal=20.0)
    assert i8["p50_ms"] < f32["p50_ms"]
    if request.config.getoption("--assert-ratios"):
        assert vs_f32 >= 3.0, f"int8 is {vs_f32:.2f}x faster than float32, {3.0 - vs_f32:.2f}x short of 3x"
        assert size_ratio <= 0.30, f"int8 is {100 * size_ratio:.1f} % of float32's size (goal <= 30 %)"
        if keras:
            assert keras["p50_ms"] / i8["p50_ms"] >= 20.0


@pytest.mark.parametrize("views", [1, 4, 8])
def test_classify_latency_with_tta(bundle, record, request, views):
    """What celledge --tta costs per crop: prepare + views x invoke + dequantise, 2 threads."""
    from scopelite.edge.classifier import LiteRTClassifier
    from scopelite.edge.tta import TTAClassifier

    clf = LiteRTClassifier(bundle, num_threads=2)
    if views > 1:
        clf = TTAClassifier(clf, views)
    spec = clf.input_spec
    crop = np.random.default_rng(0).integers(0, 256, (1, spec.height, spec.width, 3), dtype=np.uint8)
    r = measure(lambda: clf.classify(crop), request.config.getoption("--runs"))
    record.add(f"classify one crop, --tta {views}, 2 threads", **r)
    assert r["p50_ms"] > 0
