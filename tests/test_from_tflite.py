"""celltrain fit --weights MODEL.tflite: training starts from an int8 (or float) TFLite model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from scopelite.edge.errors import UserError
from scopelite.train import from_tflite

SHIPPED = Path(__file__).resolve().parents[1] / "edge" / "models" / "bloodcell_int8.tflite"


def test_dequantize_per_tensor_per_channel_and_float():
    q = np.array([[-128, 0, 127], [10, 20, 30]], np.int8)
    per_tensor = {"scales": [0.5], "zero_points": [2], "quantized_dimension": 0}
    np.testing.assert_allclose(from_tflite.dequantize(q, per_tensor), 0.5 * (q.astype(float) - 2))
    per_row = {"scales": [0.5, 2.0], "zero_points": [0, 1], "quantized_dimension": 0}
    np.testing.assert_allclose(from_tflite.dequantize(q, per_row)[1], 2.0 * (np.array([10, 20, 30]) - 1))
    per_col = {"scales": [1.0, 2.0, 3.0], "zero_points": [0, 0, 0], "quantized_dimension": 1}
    np.testing.assert_allclose(from_tflite.dequantize(q, per_col)[0], [-128, 0, 381])
    f = np.array([0.25, -1.5], np.float32)
    np.testing.assert_array_equal(from_tflite.dequantize(f, {"scales": [], "zero_points": []}), f)


def test_layouts_match_keras():
    k = np.arange(2 * 3 * 3 * 4).reshape(2, 3, 3, 4)  # TFLite conv [out, kh, kw, in]
    assert from_tflite.to_keras_layout("CONV_2D", k)[1, 2, 3, 0] == k[0, 1, 2, 3]
    d = np.arange(3 * 3 * 6).reshape(1, 3, 3, 6)  # depthwise [1, kh, kw, in * mult], mult 2
    kd = from_tflite.to_keras_layout("DEPTHWISE_CONV_2D", d, 2)
    assert kd.shape == (3, 3, 3, 2) and kd[1, 1, 2, 1] == d[0, 1, 1, 2 * 2 + 1]
    fc = np.arange(6).reshape(2, 3)
    assert from_tflite.to_keras_layout("FULLY_CONNECTED", fc).shape == (3, 2)


def test_restandardised_batchnorm_computes_the_same_function():
    rng = np.random.default_rng(0)
    eps = 1e-3
    bias = rng.normal(size=5).astype(np.float32)
    x = rng.normal(3.0, 2.5, size=(200, 5))
    before = from_tflite.unfolded_batchnorm(bias, eps)

    def bn(ws, v):
        g, b, m, s = ws
        return g * (v - m) / np.sqrt(s + eps) + b

    np.testing.assert_allclose(bn(before, x), x + bias, atol=1e-5)  # identity statistics: adds the bias
    after = from_tflite.restandardised(before, x.mean(0), x.var(0), eps)
    np.testing.assert_allclose(bn(after, x), bn(before, x), atol=1e-4)
    np.testing.assert_allclose(after[2], x.mean(0), rtol=1e-6)
    # in training mode (batch statistics) the layer now also computes nearly the same thing
    np.testing.assert_allclose(bn([after[0], after[1], x.mean(0), x.var(0)], x), x + bias, atol=1e-4)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _tflite_probs(path, images):
    from scopelite.edge.classifier import LiteRTClassifier

    return LiteRTClassifier(path).classify(images)


def _folded_kernels(model):
    """Conv kernels with the following BatchNorm folded in, as the converter does."""
    from scopelite.train._keras import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            conv = from_tflite._inbound_layer(layer)
            g, _, _, v = layer.get_weights()
            out[conv.name] = conv.get_weights()[0] * (g / np.sqrt(v + layer.epsilon))
    return out


def test_int8_model_rebuilt_as_float_agrees_with_it(tiny_run, synth_dir):
    from scopelite.train import model as model_lib
    from scopelite.train._keras import keras

    original = keras.models.load_model(tiny_run["keras"], compile=False)
    m = model_lib.build("tiny", 32, 8)
    assert model_lib.copy_weights_from(m, str(tiny_run["tflite"])) == 4  # 3 convs + the dense head
    # the kernels are the original's folded kernels, to within int8 rounding (half a step per channel)
    for name, folded in _folded_kernels(original).items():
        got = m.get_layer(name).get_weights()[0]
        step = np.abs(folded).max(axis=(0, 1, 2)) / 127
        assert np.all(np.abs(got - folded) <= step * 0.5 + 1e-6), name
    images = _images(64, 32)
    p_int8 = _tflite_probs(tiny_run["tflite"], images)
    p = m.predict(images.astype(np.float32), verbose=0)
    assert (p.argmax(1) == p_int8.argmax(1)).mean() >= 0.9
    assert np.abs(p - p_int8).mean() < 0.03
    n = from_tflite.restandardise_batchnorm(m, images[:32], batch_size=8)
    assert n == 3
    np.testing.assert_allclose(m.predict(images.astype(np.float32), verbose=0), p, atol=1e-4)
    assert np.abs(m.get_layer("bn0").moving_mean.numpy()).max() > 0  # real statistics now


def test_float_tflite_round_trip_is_exact(tiny_run, tmp_path):
    from scopelite.compress.convert import to_float32
    from scopelite.train import model as model_lib
    from scopelite.train._keras import keras

    original = keras.models.load_model(tiny_run["keras"], compile=False)
    fixed = model_lib.rebuild_for_export(original, "tiny", 32, 8)
    (tmp_path / "f.tflite").write_bytes(to_float32(fixed))
    m = model_lib.build("tiny", 32, 8)
    model_lib.copy_weights_from(m, str(tmp_path / "f.tflite"))
    images = _images(16, 32, seed=1).astype(np.float32)
    np.testing.assert_allclose(m.predict(images, verbose=0), original.predict(images, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_shipped_model_rebuilt_as_efficientnetv2b0(synth_dir):
    """The real case: the packaged int8 EfficientNetV2B0 becomes a float Keras model that agrees with it."""
    import cv2

    from scopelite.train import model as model_lib

    m = model_lib.build("efficientnetv2b0", 96, 8)
    assert model_lib.copy_weights_from(m, str(SHIPPED)) == 92
    files = sorted((synth_dir / "crops").rglob("*.png"))[:24]
    images = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    p_int8 = _tflite_probs(SHIPPED, images)
    p = m.predict(images.astype(np.float32), verbose=0)
    assert (p.argmax(1) == p_int8.argmax(1)).mean() >= 0.9
    assert np.abs(p - p_int8).max() < 0.25


def test_a_model_of_another_shape_is_refused(tiny_run, tmp_path):
    from scopelite.train import model as model_lib

    with pytest.raises(UserError, match="same --arch"):
        model_lib.copy_weights_from(model_lib.build("tiny", 32, 8), str(SHIPPED))
    with pytest.raises(UserError, match="kernel of shape"):
        model_lib.copy_weights_from(model_lib.build("tiny", 32, 5), str(tiny_run["tflite"]))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(UserError, match="TFLite model"):
        model_lib.copy_weights_from(model_lib.build("tiny", 32, 8), str(bad))


def test_fit_starts_from_an_int8_model_through_the_cli(tiny_run, tmp_path):
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "r"), "--arch", "tiny", "--image-size", "32",
                "--epochs", "2", "--head-epochs", "1", "--synthetic-per-class", "12",
                "--weights", str(tiny_run["tflite"]))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dequantised" in r.stdout and "statistics of 3 BatchNorm layers" in r.stdout
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["weights"] == str(tiny_run["tflite"])
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "e"), "--epochs", "1", "--synthetic-per-class", "4",
                "--weights", str(tiny_run["tflite"]), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [x for x in r.stderr.splitlines() if x.startswith("Error")]
    assert len(err) == 1 and "same --arch" in err[0], r.stderr[-2000:]
    assert not (tmp_path / "e").exists()  # no half-made run folder left behind


@pytest.mark.slow
def test_fit_fine_tunes_the_shipped_model_by_name(tmp_path):
    """--weights shipped: the packaged int8 model, wherever the package is installed."""
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "s"), "--image-size", "64", "--epochs", "1",
                "--head-epochs", "0", "--synthetic-per-class", "4", "--batch-size", "16", "--weights", "shipped",
                "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "statistics of 59 BatchNorm layers" in r.stdout and "NOTE: that model's classes" not in r.stdout
    # the next step as the few-shot curve was measured: plain int8 (QAT would train again on the few cells)
    assert f"next: cellcompress {tmp_path / 's'} --int8 --out" in r.stdout and "--qat" not in r.stdout, r.stdout
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert Path(cfg["weights"]).resolve() == SHIPPED.resolve()


def test_other_classes_are_pointed_out(tiny_run):
    from scopelite.train import model as model_lib
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import _restandardise

    m = model_lib.build("tiny", 32, 8, weights=str(tiny_run["tflite"]))
    lines = []
    cfg = FitConfig(out="unused", arch="tiny", weights=str(tiny_run["tflite"]), batch_size=8)
    names = [f"class{i}" for i in range(8)]
    _restandardise(m, _images(16, 32), names, cfg, lines.append)
    assert any("NOTE: that model's classes" in x and "class0" in x for x in lines), lines
    lines.clear()
    _restandardise(m, _images(16, 32), from_tflite.sidecar_labels(tiny_run["tflite"]), cfg, lines.append)
    assert not any("NOTE" in x for x in lines)
    assert from_tflite.sidecar_labels(Path("no/such/model.tflite")) is None


def test_layers_without_bias_and_a_depth_multiplier_round_trip(tmp_path):
    """Bias-free Conv2D/DepthwiseConv2D (multiplier 2)/Dense: the kernels come back exactly, biases as zeros."""
    from scopelite.compress.convert import to_float32
    from scopelite.train import model as model_lib
    from scopelite.train._keras import keras

    def net():
        inp = keras.Input((8, 8, 3), batch_size=1)
        x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(inp)
        x = keras.layers.Conv2D(4, 1, use_bias=False, name="pw")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(3, use_bias=False, name="fc")(x))

    src = net()
    (tmp_path / "nb.tflite").write_bytes(to_float32(src))
    assert [op.bias.shape for op in from_tflite.read_weighted_ops(tmp_path / "nb.tflite")] == [(6,), (4,), (3,)]
    dst = net()
    assert model_lib.copy_weights_from(dst, str(tmp_path / "nb.tflite")) == 3
    for name in ("dw", "pw", "fc"):
        np.testing.assert_allclose(dst.get_layer(name).get_weights()[0], src.get_layer(name).get_weights()[0],
                                   atol=1e-6)


def test_few_labelled_cells_are_pointed_out_when_fine_tuning(tiny_run, synth_dir, tmp_path):
    """A lab fine-tuning on a handful of cells per class hears what that gave on another lab."""
    from scopelite.train.fit import FEW_CELLS, few_cells_note

    note = few_cells_note({"eosinophil": 5, "monocyte": 2, "neutrophil": FEW_CELLS, "basophil": 0}, pretrained=True)
    assert note.startswith("few labelled cells (monocyte 2, eosinophil 5)") and "neutrophil" not in note
    assert "basophil" not in note and "docs/cross-lab.md" in note
    assert few_cells_note({"eosinophil": 5}, pretrained=False) is None  # training from scratch: another matter
    assert few_cells_note({"eosinophil": FEW_CELLS, "basophil": 0}, pretrained=True) is None
    cells = tmp_path / "cells"  # a lab's labelled cells: class folders without the synthetic data's manifest
    shutil.copytree(synth_dir / "crops", cells)
    # as celledge export leaves them: the scale the daemon cut each cell at (a red cell over a fifth of the side)
    from scopelite.edge.session_export import record_files

    record_files(cells, [{"file": str(f.relative_to(cells)), "rbc_fraction": 0.2} for f in sorted(cells.glob("*/*.png"))])
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "r"), "--arch", "tiny", "--image-size", "32",
                "--epochs", "1", "--head-epochs", "0", "--data", str(cells), "--weights", str(tiny_run["tflite"]))
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if "NOTE: few labelled cells" in x)
    assert "basophil 3" in line  # synth_dir holds 3 crops of each class
    assert "training scale: red cells 6.4 px across, as export.json records" in r.stdout  # 0.2 x 32 px
    assert json.loads((tmp_path / "r" / "model.json").read_text())["input"]["rbc_px"] == 6.4


def test_adapting_the_shipped_model_is_known_by_name_or_by_path():
    """fit's next line (cellcompress without --qat after adapting the shipped model) matched the name alone: a resumed
    run's config.json holds the resolved path, and --weights PATH/bloodcell_int8.tflite, and both were told --qat."""
    from scopelite.edge.packaged import default_model
    from scopelite.train.cli import _adapts_the_shipped_model

    assert _adapts_the_shipped_model("shipped") and _adapts_the_shipped_model(str(default_model()))
    assert not _adapts_the_shipped_model("none") and not _adapts_the_shipped_model("runs/mine/model.keras")
