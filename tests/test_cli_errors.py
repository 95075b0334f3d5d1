"""Bad input gives one line, a non-zero exit and no traceback."""
import shutil

import pytest
from conftest import assert_one_line_error as _assert_one_line_error
from conftest import run_cli


def test_edge_bad_models(broken, synth_dir):
    img = str(next((synth_dir / "crops" / "basophil").glob("*.png")))
    _assert_one_line_error(run_cli("celledge", "classify", str(broken["corrupt"]), img), "cannot load")
    _assert_one_line_error(run_cli("celledge", "classify", str(broken["mismatch"]), img), "input shape")
    _assert_one_line_error(run_cli("celledge", "classify", str(broken["nosidecar"]), img), "no sidecar")
    _assert_one_line_error(run_cli("celledge", "watch", str(synth_dir), "--model", str(broken["mismatch"])),
                           "sidecar says")


def test_edge_bad_inputs(tiny_run, tmp_path):
    r = run_cli("celledge", "classify", str(tiny_run["tflite"]), str(tmp_path / "missing.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    _assert_one_line_error(run_cli("celledge", "classify", str(tiny_run["tflite"]), str(bad)), "could not be read")
    _assert_one_line_error(run_cli("celledge", "watch", str(tmp_path / "nope.avi"), "--model", str(tiny_run["tflite"])),
                           "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(run_cli("celledge", "watch", str(empty), "--model", str(tiny_run["tflite"])), "no images")
    _assert_one_line_error(run_cli("celledge", "watch", "/dev/video99", "--model", str(tiny_run["tflite"]),
                                   "--exit-on-eof"), "cannot open video source")
    r = run_cli("celledge", "watch", "/dev/video0", "--model", str(tiny_run["tflite"]), "--size", "big")
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr and "Traceback" not in r.stderr


def test_compress_bad_inputs(tiny_run, broken, tmp_path):
    out = str(tmp_path / "o")
    _assert_one_line_error(run_cli("cellcompress", str(broken["corrupt"]), "--int8", "--out", out),
                           "this takes the model.keras")
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"PK not a zip")
    _assert_one_line_error(run_cli("cellcompress", str(fake), "--int8", "--out", out), "no sidecar")
    r = run_cli("cellcompress", str(tmp_path / "none.keras"), "--int8", "--out", out)
    assert r.returncode == 2 and "does not exist" in r.stderr
    # a model.keras whose bytes were replaced: the sidecar hash catches it
    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run, ignore=shutil.ignore_patterns("int8", "checkpoints"))
    (run / "model.keras").write_bytes(b"truncated")
    _assert_one_line_error(run_cli("cellcompress", str(run / "model.keras"), "--int8", "--out", out), "sha256")
    _assert_one_line_error(run_cli("cellcompress", str(tiny_run["keras"]), "--out", out), "--int8")
    assert not (tmp_path / "o" / "model.tflite").exists()


def test_train_bad_inputs(tmp_path, tiny_run):
    _assert_one_line_error(run_cli("celltrain", "fit", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "r")),
                           "not found")
    data = tmp_path / "data"
    (data / "basophil").mkdir(parents=True)
    _assert_one_line_error(run_cli("celltrain", "fit", "--data", str(data), "--out", str(tmp_path / "r")),
                           "holds no images")
    _assert_one_line_error(run_cli("celltrain", "fit", "--out", str(tmp_path / "r2"), "--weights", "imagenet",
                                   "--arch", "tiny"), "imagenet")
    _assert_one_line_error(run_cli("celltrain", "fit", "--out", str(tmp_path / "r3"), "--weights",
                                   str(tmp_path / "none.keras"), "--arch", "tiny"), "no such file")
    _assert_one_line_error(run_cli("celltrain", "fit", "--out", str(tiny_run["dir"]), "--arch", "tiny"),
                           "already holds")
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "r4"), "--epochs", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_imagenet_without_network_explains_the_alternatives(tmp_path):
    import os

    env = dict(os.environ, HOME=str(tmp_path), KERAS_HOME=str(tmp_path / ".keras"),
               https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")  # no cache, no network
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "r"), "--weights", "imagenet", "--epochs", "1",
                "--synthetic-per-class", "5", "--image-size", "32", env=env)
    _assert_one_line_error(r, "ImageNet", "--weights none", "--weights FILE")


@pytest.mark.parametrize("tool", ["celledge", "celltrain", "cellcompress"])
def test_a_tool_alone_prints_its_help_as_help(tool):
    """Run with no command, each tool prints its usual help (its commands one a line), not the whole help squeezed
    into one Error line."""
    r = run_cli(tool)
    assert r.returncode == 2 and not r.stderr.startswith("Error"), r.stderr[:500]
    assert "Usage:" in r.stderr and "Commands:" in r.stderr and len(r.stderr.splitlines()) > 8


def test_compress_refuses_the_training_runs_own_folder_as_out(tiny_run):
    """model.tflite's sidecar is model.json: written into the run's folder it replaced the Keras model's own, and
    the run could no longer be evaluated or converted."""
    from conftest import invoke_cli

    keras_sidecar = tiny_run["dir"] / "model.json"
    before = keras_sidecar.read_bytes()
    r = invoke_cli("cellcompress", str(tiny_run["keras"]), "--int8", "--out", str(tiny_run["dir"]))
    _assert_one_line_error(r, "the training run's own folder")
    assert keras_sidecar.read_bytes() == before
