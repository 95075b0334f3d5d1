"""celltrain fit options that a real run depends on, on the tiny model."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from scopelite.edge.bundle import load_sidecar
from scopelite.train.config import FitConfig
from scopelite.train.fit import plan, set_trainable

QUIET = dict(log=lambda _: None, verbose=0)


def _fit(tmp_path, name, **kw):
    from scopelite.train.fit import fit

    base = dict(out=str(tmp_path / name), arch="tiny", image_size=32, epochs=2, synthetic_per_class=20,
                learning_rate=5e-3)
    base.update(kw)
    return fit(FitConfig(**base), **QUIET)


def test_plan_phases_and_progressive_stages():
    segs = plan(FitConfig(out="x", epochs=9, progressive=True))
    assert [(s.start, s.end) for s in segs] == [(0, 3), (3, 6), (6, 9)]
    assert [s.image_size for s in segs] == [56, 80, 96]  # 60 %, 80 %, 100 %, multiples of 8
    assert segs[0].strength < segs[-1].strength
    segs = plan(FitConfig(out="x", epochs=10, weights="model.keras", head_epochs=2))
    assert [(s.phase, s.start, s.end) for s in segs] == [("head", 0, 2), ("finetune", 2, 10)]


@pytest.mark.slow
def test_fine_tune_freezes_batchnorm_and_part_of_the_backbone():
    from scopelite.train._keras import keras
    from scopelite.train.model import build

    m = build("efficientnetv2b0", 32, 8)
    set_trainable(m, "head", 0.3)
    assert [layer.name for layer in m.layers if layer.trainable and layer.weights] == ["predictions"]
    set_trainable(m, "finetune", 0.3)
    assert not any(layer.trainable for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization))
    convs = [layer for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not convs[0].trainable and convs[-1].trainable
    assert 0.15 < np.mean([c.trainable for c in convs]) < 0.5


@pytest.mark.parametrize("opts", [
    dict(progressive=True, epochs=3),
    dict(balance="oversample", mixup=0.5, optimizer="lion", schedule="exponential", learning_rate=3e-4),
    dict(augment="strong", optimizer="adam", patience=1),
])
def test_option_combinations_train(tmp_path, opts):
    m = _fit(tmp_path, "r", **opts)
    assert 0 <= m["test"]["accuracy"] <= 1
    assert (tmp_path / "r" / "curves.png").is_file() and (tmp_path / "r" / "tensorboard").is_dir()
    hist = json.loads((tmp_path / "r" / "history.json").read_text())
    assert 1 <= len(hist["val_accuracy"]) <= opts.get("epochs", 2)


def test_mirrored_strategy_on_two_cpu_replicas(tmp_path):
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "m"), "--arch", "tiny", "--image-size", "32",
                "--epochs", "1", "--synthetic-per-class", "12", "--strategy", "mirrored", "--batch-size", "16",
                "--quiet", env=dict(os.environ, SCOPELITE_CPU_REPLICAS="2"))
    assert r.returncode == 0, r.stderr[-2000:]
    prov = json.loads((tmp_path / "m" / "model.json").read_text())["provenance"]["training"]
    assert prov["extra"]["replicas"] == 2 and prov["config"]["strategy"] == "mirrored"


def test_yaml_config_supplies_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("arch: tiny\nimage-size: 32\nepochs: 1\nsynthetic_per_class: 10\nlabel_smoothing: 0.2\n")
    r = run_cli("celltrain", "fit", "--config", str(cfg), "--out", str(tmp_path / "y"), "--label-smoothing", "0.1",
                "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    saved = json.loads((tmp_path / "y" / "config.json").read_text())
    assert saved["arch"] == "tiny" and saved["image_size"] == 32 and saved["label_smoothing"] == 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    r = run_cli("celltrain", "fit", "--config", str(bad), "--out", str(tmp_path / "z"))
    assert r.returncode == 2 and "unknown keys" in r.stderr and "Traceback" not in r.stderr


def test_few_shot_preset_sets_the_recipe_and_flags_and_config_override_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 8\n")
    r = run_cli("celltrain", "fit", "--preset", "few-shot", "--config", str(cfg), "--weights", "none", "--arch", "tiny",
                "--image-size", "32", "--epochs", "2", "--average-last", "2", "--synthetic-per-class", "6",
                "--out", str(tmp_path / "p"), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["fine_tune_fraction"] == 1.0 and saved["learning_rate"] == 1e-4 and saved["head_epochs"] == 0
    assert saved["augment"] == "strong" and saved["strength"] == 0.5
    assert saved["soup"] == 3 and sorted(p.name for p in (tmp_path / "p" / "members").iterdir()) == ["0", "1", "2"]
    assert saved["epochs"] == 2 and saved["weights"] == "none" and saved["batch_size"] == 8  # flags, then --config
    assert saved["views"] == 8 and load_sidecar(tmp_path / "p" / "model.keras").views == 8  # celledge runs 8 views
    r = run_cli("celltrain", "fit", "--preset", "few-shot", "--views", "3", "--out", str(tmp_path / "v"))
    assert r.returncode == 2 and "give 1, 2, 4 or 8 views" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("celltrain", "fit", "--preset", "few-shots", "--out", str(tmp_path / "q"))
    assert r.returncode == 2 and "few-shot" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path):
    run = tmp_path / "k"
    exe = Path(sys.executable).parent / "celltrain"
    p = subprocess.Popen([str(exe), "fit", "--out", str(run), "--arch", "tiny", "--image-size", "32",
                          "--epochs", "40", "--synthetic-per-class", "60", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "state.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= 3:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = json.loads(state.read_text())["epochs_done"]
    assert 3 <= done < 40 and not (run / "model.keras").exists()
    r = run_cli("celltrain", "fit", "--out", str(run), "--arch", "tiny")
    assert r.returncode == 2 and "--resume" in r.stderr
    r = run_cli("celltrain", "fit", "--resume", str(run), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming after epoch {done}" in r.stdout
    rows = list(csv.DictReader((run / "history.csv").open()))
    epochs = [int(x["epoch"]) for x in rows]
    assert epochs == list(range(40))  # every epoch once: resume trims rows past state.json
    assert json.loads(state.read_text())["epochs_done"] == 40
    assert json.loads((run / "model.json").read_text())["provenance"]["training"]["extra"]["resumed"] is True
    assert json.loads((run / "model.json").read_text())["metrics"]["test"]["accuracy"] >= 0.85


def test_checkpoint_write_interrupted_keeps_the_previous_checkpoint(tmp_path):
    """The CI failure this guards: a kill while Keras wrote last.keras left a truncated file."""
    from scopelite.train._keras import keras
    from scopelite.train.fit import _AtomicCheckpoint

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / "last.keras"
    last = _AtomicCheckpoint(path)
    last.set_model(model)
    last.on_epoch_end(0)
    before = path.read_bytes()

    def dies_mid_write(dest, *a, **k):
        Path(dest).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed")

    model.save = dies_mid_write
    with pytest.raises(KeyboardInterrupt):
        last.on_epoch_end(1)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.keras"]
    keras.models.load_model(path)

    best = _AtomicCheckpoint(tmp_path / "best.keras", "val_accuracy", 0.5)
    best.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    best.on_epoch_end(0, {"val_accuracy": 0.4})
    assert not (tmp_path / "best.keras").exists()  # not better than the resumed best
    best.on_epoch_end(1, {"val_accuracy": 0.6})
    assert (tmp_path / "best.keras").is_file() and best.best == 0.6


def test_resume_from_a_damaged_checkpoint_is_one_clear_line(tmp_path):
    run = tmp_path / "d"
    _fit(tmp_path, "d", epochs=1)
    (run / "model.keras").unlink()
    (run / "checkpoints" / "last.keras").write_bytes(b"PK\x03\x04 cut short")
    r = run_cli("celltrain", "fit", "--resume", str(run), "--quiet")
    assert r.returncode == 2 and "damaged" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    # the run's own JSON files cut short by a kill or edited by hand: tracebacks before
    from conftest import invoke_cli

    for name, text in (("state.json", ""), ("state.json", '{"epochs_done": "x", "best_val_accuracy": 0.5}'),
                       ("state.json", "[1]"), ("config.json", ""), ("split.json", ""), ("split.json", '{"train": 3}')):
        kept = (run / name).read_bytes()
        (run / name).write_text(text)
        r = invoke_cli("celltrain", "fit", "--resume", str(run), "--quiet")
        assert r.returncode != 0 and "Traceback" not in r.stderr, (name, text, r.stderr[-1500:])
        assert f"{run / name} is damaged" in r.stderr.splitlines()[-1], (name, text, r.stderr[-1500:])
        (run / name).write_bytes(kept)


def test_trim_history_drops_repeated_and_broken_rows(tmp_path):
    from scopelite.train.fit import trim_history

    h = tmp_path / "history.csv"
    h.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n2,0.7,0.8\n3,0.7")  # epoch 3 cut mid-line
    trim_history(h, 2)  # state.json says 2 epochs done: epoch 2 is trained again
    assert h.read_text() == "epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n"
    h.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.")  # every cell there, the last number cut short
    trim_history(h, 5)
    assert h.read_text() == "epoch,accuracy,loss\n0,0.5,1.0\n"
    trim_history(tmp_path / "absent.csv", 2)  # no file: nothing to do
    # a header emptied or re-saved by a spreadsheet with ';': the whole training ran, then a TypeError, no model
    from scopelite.edge.errors import UserError

    for damaged in ("\n0,0.5,1.0\n", "epoch;accuracy;loss\n0;0.5;1.0\n", ",accuracy\n0,0.5\n"):
        h.write_text(damaged)
        with pytest.raises(UserError, match="its first line is not the header celltrain writes"):
            trim_history(h, 2)
    from scopelite.train.fit import _read_history

    h.write_text("epoch,accuracy\n0,0.5,0.7\n1,abc\n2,0.6\n")  # a row longer than the header, a word
    assert _read_history(h) == {"accuracy": [0.5, 0.6]}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_says_how_to_go_on(tmp_path, sig):
    """An interrupted fit said only "Error: interrupted"; one ended by SIGTERM (kill, timeout, a batch scheduler)
    said nothing at all, exit 143."""
    run = tmp_path / "k"
    exe = Path(sys.executable).parent / "celltrain"
    p = subprocess.Popen([str(exe), "fit", "--out", str(run), "--arch", "tiny", "--image-size", "32",
                          "--epochs", "200", "--synthetic-per-class", "40", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         # a job started with & by a script (CI's nohup) ignores SIGINT, and so would its children
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = run / "state.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not state.is_file():
        time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert [x for x in err.splitlines() if x.startswith("Error")] == \
        [f"Error: interrupted; continue from the last finished epoch with: celltrain fit --resume {run}"]


def test_a_diverged_training_is_an_error_and_writes_no_model(tmp_path):
    """--lr 1e308: the loss went NaN, the NaN model was saved and exit 0; cellcompress then approved it and the
    device answered one class at 0.996 for every cell."""
    from conftest import invoke_cli

    r = invoke_cli("celltrain", "fit", "--out", str(tmp_path / "m"), "--arch", "tiny", "--image-size", "32",
                   "--epochs", "2", "--synthetic-per-class", "8", "--lr", "1e308", "--quiet")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "Error: training diverged" in r.stderr and "--lr (it was 1e+308)" in r.stderr
    assert "--weight-decay" not in r.stderr  # the usual decay: not the cause
    r = invoke_cli("celltrain", "fit", "--out", str(tmp_path / "d"), "--arch", "tiny", "--image-size", "32",
                   "--epochs", "2", "--synthetic-per-class", "8", "--weight-decay", "1e300", "--quiet")
    assert "Error: training diverged" in r.stderr and "--weight-decay (it was 1e+300)" in r.stderr  # "lower --lr"
    assert not (tmp_path / "m" / "checkpoints" / "last.keras").exists()  # no checkpoint of broken weights
    assert not (tmp_path / "m" / "model.keras").exists() and not (tmp_path / "m" / "model.json").exists()
    good = _fit(tmp_path, "good", epochs=1, synthetic_per_class=8)  # a model, then the same with its weights broken
    assert good["test"]["accuracy"] >= 0
    from scopelite.train._keras import keras

    m = keras.models.load_model(tmp_path / "good" / "model.keras", compile=False)
    w = m.get_weights()
    w[0] = w[0] * np.nan
    m.set_weights(w)
    m.save(tmp_path / "good" / "model.keras")  # its sidecar's hash no longer matches: made to match below
    from scopelite.edge.bundle import sha256_file

    sc = json.loads((tmp_path / "good" / "model.json").read_text())
    sc["sha256"] = sha256_file(tmp_path / "good" / "model.keras")
    (tmp_path / "good" / "model.json").write_text(json.dumps(sc))
    r = invoke_cli("cellcompress", str(tmp_path / "good" / "model.keras"), "--int8", "--out", str(tmp_path / "c"))
    assert r.returncode != 0 and "weight arrays hold NaN or infinity" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "c" / "model.tflite").exists()


def test_saved_configs_are_checked_value_by_value_and_what_fit_writes_passes():
    """config_problem: what fit --resume, evaluate, cellcompress read from config.json or a sidecar. A soup member of
    the highest --seed, a run of before session 30 (seeds up to 2**32 - 1, --worker-timeout inf), keras3 and the
    few-shot preset pass; a hand-edited value is named."""
    from scopelite.train.config import PRESETS, FitConfig, config_problem
    from scopelite.train.soup import member_configs

    for cfg in (*member_configs(FitConfig(out="x", seed=2**31 - 1, soup=3)),
                FitConfig(out="x", **PRESETS["few-shot"]), FitConfig(out="x", backend="keras3", ema=0.999),
                FitConfig(out="x", aug={"hed": 0.5, "jpeg": None}, train_seed=None)):
        assert config_problem(cfg.to_json()) is None, cfg
    old = {**FitConfig(out="x").to_json(), "train_seed": 2**32 - 1, "worker_timeout": float("inf")}
    assert config_problem(old) is None and config_problem({"future_option": 1}) is None
    for key, value, said in (("epochs", "ten", "epochs: 'ten' is not a whole number"), ("epochs", 10.0, "whole"),
                             ("arch", "resnet", "not one of efficientnetv2b0, tiny"), ("views", 3, "not one of 1, 2"),
                             ("learning_rate", 0, "not more than 0"), ("seed", 2**32, "from 0 to 4294967295"),
                             ("strength", float("nan"), "not a number"), ("aug", {"hed": 2}, "aug: hed=2"),
                             ("image_size", None, "image_size is null"), ("data", 5, "data: 5 is not a name")):
        assert said in (config_problem({**old, key: value}) or ""), (key, value)
        with pytest.raises(ValueError, match=re.escape(said)):
            FitConfig.from_json({**old, key: value})


def test_fit_flags_and_config_files_take_the_same_ranges():
    """celltrain fit's flags and config_problem (a --config file, a saved config) had a range each: --ema refused 1
    where a config file took it. Every ranged flag now accepts and refuses exactly what config_problem does."""
    import math

    import click

    from scopelite.train.cli import fit
    from scopelite.train.config import RANGES, out_of_range

    # but the seeds: a saved config may hold up to 2**32 - 1 (a soup member adds 100 i to its training seed), a flag
    # takes up to 2**31 - 1 (errors.SEED, every CLI's)
    ranged = [p for p in fit.params if p.name in RANGES and p.name not in ("seed", "train_seed")]
    assert len(ranged) >= 15, [p.name for p in ranged]
    for p in ranged:
        lo, hi = RANGES[p.name]
        integer = isinstance(p.type, click.IntRange)
        step = 1 if integer else 1e-9
        for v in (lo - step, lo, lo + step, hi - step, hi, hi + step):
            if math.isinf(v) or (integer and v != int(v)):
                continue
            v = int(v) if integer else float(v)
            try:
                p.type.convert(str(v), p, None)
                flag_takes = True
            except click.BadParameter:
                flag_takes = False
            assert flag_takes == (out_of_range(p.name, v, new_run=True) is None), (p.name, v)
    # a saved config is judged without a new run's limits: a keras3 run of batch 16384, an ema of 1 from a file of
    # before, are not "damaged" runs
    from scopelite.train.config import FitConfig, config_problem

    old = FitConfig(out="x").to_json()
    assert config_problem({**old, "batch_size": 16384}) is None and config_problem({**old, "ema": 1.0}) is None
    assert out_of_range("batch_size", 16384, new_run=True) == "from 1 to 8192"


def test_edited_sidecars_damaged_history_and_audit_outputs_are_named(tiny_run, tmp_path):
    """Found by a hunt (session 31): a sidecar whose input size (or size and config) was edited passed evaluate
    silently and crashed cellcompress and explain with Keras' shape error; efficientnetv2b0 recorded at 16 px crashed
    cellcompress; audit --clean-copy of a .npz was a ValueError after --out was written, and audit --out inside the
    data put flagged.png among the training images; a hand-edited history.csv crashed the end of every --resume."""
    import shutil

    import cv2

    from conftest import assert_one_line_error, invoke_cli
    from scopelite.edge.bundle import sha256_file
    from scopelite.edge.errors import UserError
    from scopelite.train.fit import trim_history

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run, ignore=shutil.ignore_patterns("int8"))
    sc = json.loads((run / "model.json").read_text())
    for change, said in (({"input": {**sc["input"], "width": 48}}, "but its sidecar says 48x32"),
                         ({"labels": sc["labels"][:-1]}, f"gives {len(sc['labels'])} classes")):
        (run / "model.json").write_text(json.dumps({**sc, **change, "sha256": sha256_file(run / "model.keras")}))
        for cmd in (("celltrain", "evaluate", str(run)),
                    ("cellcompress", str(run / "model.keras"), "--int8", "--out", str(tmp_path / "c"))):
            assert_one_line_error(invoke_cli(*cmd), said)
            assert not (tmp_path / "c").exists()
    training = sc["provenance"]["training"]
    (run / "model.json").write_text(json.dumps({**sc, "sha256": sha256_file(run / "model.keras"), "input": {
        **sc["input"], "height": 16, "width": 16}, "provenance": {**sc["provenance"], "training": {
            **training, "config": {**training["config"], "arch": "efficientnetv2b0", "image_size": 16}}}}))
    assert_one_line_error(invoke_cli("cellcompress", str(run / "model.keras"), "--int8", "--out", str(tmp_path / "c")),
                          "use the sidecar celltrain fit wrote")  # Keras' 'Input size must be at least 32x32'
    data = tmp_path / "data"
    for i, name in enumerate(("basophil", "eosinophil")):
        (data / name).mkdir(parents=True)
        for k in range(3):
            cv2.imwrite(str(data / name / f"{k}.png"), np.full((16, 16, 3), 60 + 50 * i + k, np.uint8))
    np.savez(tmp_path / "m.npz", images=np.zeros((4, 16, 16, 3), np.uint8), labels=np.array([0, 1, 0, 1]))
    r = invoke_cli("celltrain", "audit", str(tmp_path / "m.npz"), "--out", str(tmp_path / "au"), "--clean-copy",
                   str(tmp_path / "cc"), "--image-size", "16")
    assert_one_line_error(r, "--clean-copy copies class folders")
    assert not (tmp_path / "au").exists()
    assert_one_line_error(invoke_cli("celltrain", "audit", str(data), "--out", str(data / "basophil")),
                          "flagged.png would be read as a training image")
    assert sorted(p.name for p in (data / "basophil").iterdir()) == ["0.png", "1.png", "2.png"]
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,loss,accuracy\n0,abc,0.5\n1,0.9,0.6\n")
    trim_history(hist, 2)  # the hand-edited row goes, as a row cut short by a kill does
    assert hist.read_text() == "epoch,loss,accuracy\n1,0.9,0.6\n"
    hist.write_bytes(b"epoch,loss\n0,\xff\n")
    with pytest.raises(UserError, match="is damaged"):
        trim_history(hist, 1)


def test_a_run_made_with_a_relative_data_path_is_evaluated_from_any_folder(tmp_path):
    """--data d10 was recorded as typed: from any other folder evaluate said 'the data model.keras was trained on
    (d10) is not here' (and would have read another folder named d10 there)."""
    import cv2

    for c, v in (("lymphocyte", 60), ("neutrophil", 180)):
        (tmp_path / "d10" / c).mkdir(parents=True)
        for i in range(10):
            cv2.imwrite(str(tmp_path / "d10" / c / f"{i}.png"), np.full((20, 20, 3), v + i, np.uint8))
    r = run_cli("celltrain", "fit", "--data", "d10", "--out", "run", "--arch", "tiny", "--image-size", "16",
                "--epochs", "1", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(tmp_path / "d10")
    r = run_cli("celltrain", "evaluate", str(tmp_path / "run"), cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "evaluation.json").is_file()
