"""A tiny real pipeline: fit -> int8 -> LiteRT, and the CLIs a user types."""
import json

import numpy as np

from conftest import run_cli
from scopelite.compress.ops import DYNAMIC_SHAPE_OPS, op_counts
from scopelite.edge.bundle import load_sidecar
from scopelite.edge.classifier import LiteRTClassifier


def test_generator_teaches_a_small_model(tiny_run):
    # The synthetic classes are learnable: >= 90 % on the held-out generated split.
    assert tiny_run["fit_metrics"]["test"]["accuracy"] >= 0.90


def test_int8_bundle_contract(tiny_run):
    sc = load_sidecar(tiny_run["tflite"])
    assert sc.format == "tflite" and sc.runtimes == ("cpu",)
    assert sc.input.dtype == "uint8" and sc.output.dtype == "uint8"
    assert (sc.input.height, sc.input.width) == (32, 32)
    assert sc.input.quantization.scale > 0 and sc.output.quantization is not None
    assert sc.synthetic_data is True and sc.provenance.training.data.synthetic is True
    assert sc.provenance.source.sha256 == load_sidecar(tiny_run["keras"]).sha256
    assert sc.provenance.source.file == "model.keras"  # a name beside the run, not the build machine's path
    m = sc.metrics
    assert m["split"] == "test" and m["n"] > 0
    assert {"float", "clean", "corrupted", "latency_ms", "size_bytes", "gate"} <= set(m)
    assert m["gate"]["passed"] and sc.provenance.compression.approved_from == "model_int8.tflite"
    assert sc.provenance.compression.gate.passed and sc.provenance.compression.method in ("ptq", "automatic_qat")
    ops = op_counts(tiny_run["tflite"])
    assert not set(DYNAMIC_SHAPE_OPS) & set(ops), ops
    assert ops == sc.provenance.compression.op_counts


def test_keras_and_tflite_agree(tiny_run):
    from scopelite.train._keras import keras
    from scopelite.train.synth import make_crops

    images, _ = make_crops(20, size=32, seed=123)  # fresh images, never seen
    model = keras.models.load_model(tiny_run["keras"], compile=False)
    p_keras = model.predict(images.astype(np.float32), verbose=0)
    p_lite = LiteRTClassifier(tiny_run["tflite"]).classify(images)
    agreement = (p_keras.argmax(1) == p_lite.argmax(1)).mean()
    assert agreement >= 0.95
    np.testing.assert_allclose(p_lite.sum(1), 1.0, atol=0.05)  # dequantised softmax


def test_classify_cli_json(tiny_run, synth_dir):
    r = run_cli("celledge", "classify", str(tiny_run["tflite"]), str(synth_dir / "crops"), "--json", "-k", "2")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 24
    for rec in lines:
        # the tiny model's sidecar carries the stain of its training crops: each image gets its distance
        assert set(rec) == {"path", "label", "score", "top_k", "stain_distance", "unlike_training", "scale"}
        assert rec["label"] == rec["top_k"][0]["label"] and len(rec["top_k"]) == 2
    # 96 px crops framed as the model's 32 px training crops: most are classified as given (crop_scale)
    assert sum(rec["scale"]["source"] == "as given" for rec in lines) >= 20, [rec["scale"] for rec in lines]
    # generated crops are stained like the generated training crops: few are flagged
    assert sum(rec["unlike_training"] is True for rec in lines) <= len(lines) // 4
    correct = sum(rec["label"] == rec["path"].split("/")[-2] for rec in lines)
    assert correct >= 18  # 96px crops resized to the 32px model: still mostly right


def test_watch_cli_on_generated_video(tiny_run, synth_dir):
    r = run_cli("celledge", "watch", str(synth_dir / "microscope.avi"), "--model", str(tiny_run["tflite"]))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    truth = json.loads((synth_dir / "microscope_truth.json").read_text())
    frames, summary = recs[:-1], recs[-1]["summary"]
    assert len(frames) == len(truth) == summary["frames"]
    assert summary["stopped"] == "end of stream" and summary["tally"]["total"] == len(truth)
    assert np.mean([f["label"] == t for f, t in zip(frames, truth)]) >= 0.7
    r = run_cli("celledge", "watch", str(synth_dir / "microscope.avi"), "--model", str(tiny_run["tflite"]),
                "--max-frames", "5")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 6


def test_watch_stops_on_sigterm(tiny_run, synth_dir):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "watch", str(synth_dir / "crops"), "--loop", "--fps", "20",
                          "--model", str(tiny_run["tflite"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # running: at least one frame out
    assert json.loads(first)["frame"] == 0
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert p.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])["summary"]
    assert summary["stopped"] == "stopped by signal" and summary["frames"] >= 1


def test_info_cli(tiny_run):
    r = run_cli("celledge", "info", str(tiny_run["tflite"]))
    assert r.returncode == 0, r.stderr
    assert "tflite model, sha256" in r.stdout and "cpu: works here" in r.stdout and "ops: CONV_2D 3" in r.stdout
    assert "trained on synthetic cells" in r.stdout and "{" not in r.stdout  # for people: no JSON mixed in
    r = run_cli("celledge", "info", str(tiny_run["tflite"]), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # one object, nothing else on stdout
    assert d["sidecar"]["format"] == "tflite" and d["runtimes"]["cpu"] == "works here" and d["ops"]["CONV_2D"] == 3


def test_info_says_no_accuracy_it_cannot_read_and_prints_json_a_reader_takes(tiny_run, tmp_path):
    """A hand-edited sidecar's metrics printed "accuracy: nan %" (or "-100.00 %") and ``info --json`` wrote NaN,
    which no JSON reader takes (a hunt of session 37)."""
    import shutil

    odd = tmp_path / "model.tflite"
    shutil.copy(tiny_run["tflite"], odd)
    sc = json.loads(tiny_run["tflite"].with_suffix(".json").read_text())
    sc["metrics"]["clean"]["accuracy"] = float("nan")
    sc["metrics"]["corrupted"]["accuracy"] = -1.0
    odd.with_suffix(".json").write_text(json.dumps(sc))
    r = run_cli("celledge", "info", str(odd))
    assert r.returncode == 0 and "nan" not in r.stdout.lower() and "-100" not in r.stdout, r.stdout
    r = run_cli("celledge", "info", str(odd), "--json")
    assert r.returncode == 0, r.stderr

    def refuse(name):
        raise ValueError(f"{name} in the JSON")

    d = json.loads(r.stdout, parse_constant=refuse)
    assert d["sidecar"]["metrics"]["clean"]["accuracy"] is None


def test_a_model_that_failed_the_gate_is_said_where_it_runs(tiny_run, synth_dir, tmp_path):
    """cellcompress leaves every variant beside the approval, failed ones too: given as --model, one ran silently."""
    import shutil

    from conftest import invoke_cli

    failed = tmp_path / "model_int8.tflite"
    shutil.copy(tiny_run["tflite"], failed)
    sc = json.loads(tiny_run["tflite"].with_suffix(".json").read_text())
    sc["metrics"]["gate"].update(passed=False, failures=["clean accuracy drop 25.00 pt > 1.0 pt (75.00 -> 50.00 %)"])
    failed.with_suffix(".json").write_text(json.dumps(sc))
    img = str(next((synth_dir / "crops").rglob("*.png")))
    r = invoke_cli("celledge", "classify", "--model", str(failed), img)
    assert r.returncode == 0 and "model_int8.tflite failed cellcompress's quality gate (clean accuracy drop 25.00" \
        in r.stderr, r.stderr[-2000:]
    r = invoke_cli("celledge", "classify", "--model", str(tiny_run["tflite"]), img)
    assert r.returncode == 0 and "quality gate" not in r.stderr


def test_fit_starts_from_an_earlier_run(tiny_run, tmp_path):
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import fit

    # One epoch at a tiny learning rate: only copied weights can score well.
    m = fit(FitConfig(out=str(tmp_path / "ft"), arch="tiny", image_size=32, epochs=1, synthetic_per_class=80,
                      learning_rate=1e-6, weights=str(tiny_run["keras"])), log=lambda _: None, verbose=0)
    assert m["test"]["accuracy"] >= 0.85
