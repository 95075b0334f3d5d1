"""Weight averaging: SWA in celltrain fit (--average-last) and model soups (celltrain average)."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from scopelite.edge.errors import UserError
from scopelite.train.average import average_weights, recalibrate_batchnorm, stats_differ
from scopelite.train.config import FitConfig

QUIET = dict(log=lambda _: None, verbose=0)


def _fit(path, **kw):
    from scopelite.train.fit import fit

    base = dict(out=str(path), arch="tiny", image_size=32, epochs=3, synthetic_per_class=20, learning_rate=5e-3)
    base.update(kw)
    return fit(FitConfig(**base), **QUIET)


def _weights(path):
    from scopelite.train._keras import keras

    m = keras.models.load_model(path, compile=False)
    return [w.name for w in m.weights], m.get_weights()


def test_average_weights_is_the_elementwise_mean_and_refuses_other_architectures():
    a = [np.array([1.0, 2.0], np.float32), np.ones((2, 2), np.float32)]
    b = [np.array([3.0, 6.0], np.float32), np.zeros((2, 2), np.float32)]
    avg = average_weights([a, b], ["k", "bn/moving_mean"])
    np.testing.assert_allclose(avg[0], [2.0, 4.0])
    np.testing.assert_allclose(avg[1], 0.5)
    assert avg[0].dtype == np.float32
    assert stats_differ([a, b], ["k", "bn/moving_mean"])
    assert not stats_differ([a, [b[0], a[1]]], ["k", "bn/moving_mean"])
    with pytest.raises(UserError, match="different architecture"):
        average_weights([a, [b[0], np.zeros((3, 2), np.float32)]], ["k", "x"])


def test_recalibrated_batchnorm_holds_the_mean_of_the_batch_statistics():
    from scopelite.train._keras import keras

    inp = keras.Input((4, 4, 3))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inp, bn(inp))
    bn.trainable = False
    bn.moving_mean.assign([50.0, 50.0, 50.0])
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, scale=1 + i, size=(8, 4, 4, 3)).astype(np.float32) for i in range(3)]
    assert recalibrate_batchnorm(model, iter(batches)) == 3
    expect_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expect_mean, rtol=1e-4, atol=1e-4)
    expect_var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expect_var, rtol=0.05)
    assert bn.trainable is False and bn.momentum == 0.99  # restored


def test_fit_average_last_ships_the_mean_of_the_last_epochs(tmp_path):
    out = tmp_path / "swa"
    _fit(out, epochs=3, average_last=2)
    snaps = sorted((out / "checkpoints").glob("epoch-*.npz"))
    assert [s.name for s in snaps] == ["epoch-002.npz", "epoch-003.npz"]
    names, shipped = _weights(out / "model.keras")
    loaded = []
    for s in snaps:
        with np.load(s) as z:
            loaded.append([z[f"arr_{i}"] for i in range(len(z.files))])
    for n, w, a, b in zip(names, shipped, *loaded):
        if "moving" not in n:  # BatchNorm statistics are re-estimated, not averaged
            np.testing.assert_allclose(w, (a + b) / 2, rtol=1e-5, atol=1e-6, err_msg=n)
    assert any(not np.allclose(a, b) for a, b in zip(*loaded))  # the epochs really differ
    side = json.loads((out / "model.json").read_text())
    assert side["provenance"]["training"]["extra"]["weight_averaging"]["averaged_epochs"] == [2, 3]
    assert side["provenance"]["training"]["extra"]["weight_averaging"]["batchnorm_recalibrated"] is True
    with pytest.raises(UserError, match="more than --epochs"):
        _fit(tmp_path / "bad", epochs=2, average_last=3)


def test_celltrain_average_makes_a_soup_of_one_lineage_and_refuses_other_splits(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _fit(a, epochs=2)
    _fit(b, epochs=2, weights=str(a / "model.keras"), head_epochs=0, fine_tune_fraction=1.0, learning_rate=5e-3,
         views=8)
    r = run_cli("celltrain", "average", str(a), str(b / "model.keras"), "--out", str(tmp_path / "soup"))
    assert r.returncode == 0, r.stderr
    # the runs ask celledge for 1 and 8 views: the average keeps the first's, and says so (it was silent)
    assert "ask celledge for 1 / 8 views; the average's asks for 1" in r.stdout + r.stderr
    assert json.loads((tmp_path / "soup" / "model.json").read_text())["views"] == 1
    names, wa = _weights(a / "model.keras")
    _, wb = _weights(b / "model.keras")
    _, ws = _weights(tmp_path / "soup" / "model.keras")
    for n, x, y, s in zip(names, wa, wb, ws):
        if "moving" not in n:
            np.testing.assert_allclose(s, (x + y) / 2, rtol=1e-5, atol=1e-6, err_msg=n)
    side = json.loads((tmp_path / "soup" / "model.json").read_text())
    assert [(m["run"], m["file"]) for m in side["provenance"]["training"]["extra"]["weight_averaging"]["models"]] == [
        ("a", "model.keras"), ("b", "model.keras")]  # names, not the build machine's paths
    assert 0 <= side["metrics"]["test"]["accuracy"] <= 1
    assert (tmp_path / "soup" / "split.json").read_bytes() == (a / "split.json").read_bytes()
    # the soup is an ordinary run: evaluate takes it
    r = run_cli("celltrain", "evaluate", str(tmp_path / "soup"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "soup" / "evaluation.json").is_file()

    # a disk that fills while the average is written: nothing is left (config.json and split.json alone blocked
    # the rerun with "--out is not empty")
    import errno

    import scopelite.train.soup as soup_mod

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    real, soup_mod.write_sidecar = soup_mod.write_sidecar, full
    try:
        with pytest.raises(OSError):
            soup_mod.soup([a, b], tmp_path / "full")
    finally:
        soup_mod.write_sidecar = real
    assert not (tmp_path / "full").exists() and not list(tmp_path.glob(".scopelite-*"))

    other = tmp_path / "other"
    _fit(other, epochs=1, seed=1)  # another seed: another split
    r = run_cli("celltrain", "average", str(a), str(other), "--out", str(tmp_path / "bad"))
    assert r.returncode != 0
    assert "different splits" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad" / "model.keras").exists()
    r = run_cli("celltrain", "average", str(a), "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "at least two" in r.stderr


def test_train_seed_varies_training_but_keeps_the_split(tmp_path):
    # Soup ingredients must share the split (--seed) yet differ; --train-seed changes only training.
    assert FitConfig(out="x", seed=3).training_seed == 3 and FitConfig(out="x", seed=3, train_seed=5).training_seed == 5
    a, b = tmp_path / "a", tmp_path / "b"
    for run, ts in ((a, "1"), (b, "2")):
        r = run_cli("celltrain", "fit", "--out", str(run), "--arch", "tiny", "--image-size", "32", "--epochs", "1",
                    "--synthetic-per-class", "20", "--train-seed", ts, "--quiet")
        assert r.returncode == 0, r.stderr[-2000:]
    assert (a / "split.json").read_bytes() == (b / "split.json").read_bytes()
    assert json.loads((b / "config.json").read_text())["train_seed"] == 2
    names, wa = _weights(a / "model.keras")
    _, wb = _weights(b / "model.keras")
    kernels = [n for n in names if "kernel" in n]
    # CPU training is not bit-reproducible, so differing kernels alone would not prove --train-seed
    # reaches training; the training_seed check above and the saved config are what pin that.
    assert kernels and all(not np.allclose(x, y) for n, x, y in zip(names, wa, wb) if "kernel" in n)
    r = run_cli("celltrain", "average", str(a), str(b), "--out", str(tmp_path / "soup"))
    assert r.returncode == 0, r.stderr


def test_fit_soup_fits_k_members_on_one_split_and_ships_their_average(tmp_path):
    out = tmp_path / "soup"
    r = run_cli("celltrain", "fit", "--out", str(out), "--arch", "tiny", "--image-size", "32", "--epochs", "1",
                "--synthetic-per-class", "20", "--train-seed", "4", "--soup", "2", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    members = [out / "members" / "0", out / "members" / "1"]
    assert [json.loads((m / "config.json").read_text())["train_seed"] for m in members] == [4, 104]
    assert (members[0] / "split.json").read_bytes() == (members[1] / "split.json").read_bytes() \
        == (out / "split.json").read_bytes()
    names, w0 = _weights(members[0] / "model.keras")
    _, w1 = _weights(members[1] / "model.keras")
    _, ws = _weights(out / "model.keras")
    k = next(i for i, n in enumerate(names) if "kernel" in n)
    assert np.allclose(ws[k], (w0[k] + w1[k]) / 2, atol=1e-6)
    assert json.loads((out / "config.json").read_text())["soup"] == 2
    averaged = json.loads((out / "model.json").read_text())["provenance"]["training"]["extra"]["weight_averaging"]
    assert [m["run"] for m in averaged["models"]] == ["members/0", "members/1"]
    again = run_cli("celltrain", "fit", "--resume", str(out))  # a soup is resumed by its own command
    assert again.returncode == 2 and "give the celltrain fit command that started it again" in again.stderr
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "k3"), "--soup", "2", "--backend", "keras3")
    assert r.returncode == 2 and "--soup 2 needs --backend tf-keras" in r.stderr
    r = run_cli("celltrain", "fit", "--preset", "few-shot", "--out", str(tmp_path / "k4"), "--backend", "keras3")
    assert r.returncode == 2 and "--soup 3 (from --preset or --config)" in r.stderr and "add --soup 1" in r.stderr
    r = run_cli("celltrain", "fit", "--out", str(tmp_path / "k5"), "--soup", "3", "--backend", "keras3")
    assert r.returncode == 2 and "--soup 3 needs" in r.stderr


def test_fit_soup_after_a_kill_keeps_fitted_members_and_resumes_the_cut_one(tmp_path):
    from scopelite.train.soup import fit_soup, member_configs

    import dataclasses

    from scopelite.train.model import resolve_weights

    cfg = FitConfig(out=str(tmp_path / "s"), soup=3, seed=2, weights="shipped")
    members = member_configs(dataclasses.replace(cfg, weights=resolve_weights("shipped")))  # as fit records them
    done, cut = Path(members[0].out), Path(members[1].out)
    for m, folder in ((members[0], done), (members[1], cut)):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(m.to_json()))  # as fit writes it
    (done / "model.keras").write_bytes(b"")
    (cut / "state.json").write_text("{}")
    calls = []
    with pytest.raises(UserError):  # soup() then finds no real models: what matters is who was fitted and how
        fit_soup(cfg, lambda m, resume: calls.append((m.out, m.training_seed, resume)), log=lambda _: None)
    assert calls == [(str(cut), 102, True), (members[2].out, 202, False)]
    calls.clear()  # the same folder with another recipe: refused before anything is fitted
    with pytest.raises(UserError, match=r"fitted with other settings \(epochs\)"):
        fit_soup(FitConfig(out=str(tmp_path / "s"), soup=3, seed=2, weights="shipped", epochs=20),
                 lambda m, resume: calls.append(m), log=lambda _: None)
    (done.parent.parent / "model.keras").write_bytes(b"")  # the same command after the soup finished
    with pytest.raises(UserError, match="holds a finished soup"):
        fit_soup(cfg, lambda m, resume: calls.append(m), log=lambda _: None)
    for name in ("model.keras", "config.json"):  # a plain run's folder, finished or cut before its first epoch
        plain = tmp_path / f"plain-{name}"
        plain.mkdir()
        (plain / name).write_bytes(b"")
        with pytest.raises(UserError, match="holds another run"):
            fit_soup(FitConfig(out=str(plain), soup=2, weights="none"), lambda m, resume: calls.append(m),
                     log=lambda _: None)
    assert calls == []
