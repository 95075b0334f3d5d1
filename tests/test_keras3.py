"""celltrain pack -> celltrain fit --backend keras3 -> celltrain import: the Keras 3 trainer and its bridge.

Keras 3 runs here on its TensorFlow backend, in this process beside tf-keras (on a lent GPU
machine it runs on JAX); the network and the augmentation ranges are the ones celltrain fit uses.
"""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli, run_cli
from scopelite.edge.errors import UserError
from scopelite.train.config import FitConfig
from scopelite.train.synth import make_crops

NAMES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
         "neutrophil", "platelet"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """8 class folders of generated 32-px crops (PNG), a saved split as celltrain writes it, and its pack."""
    from scopelite.train.pack import pack

    root = tmp_path_factory.mktemp("k3")
    images, labels = make_crops(6, size=32, seed=3)
    split = {"seed": 0, "class_names": NAMES, "description": "test", "train": [], "val": [], "test": []}
    seen = {c: 0 for c in range(8)}
    for img, lab in zip(images, labels):
        name = NAMES[lab]
        (root / "data" / name).mkdir(parents=True, exist_ok=True)
        i = seen[lab] = seen[lab] + 1
        rel = f"{name}/{i}.png"
        cv2.imwrite(str(root / "data" / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        split["train" if i <= 4 else "val" if i == 5 else "test"].append(rel)
    (root / "split.json").write_text(json.dumps(split))
    pack(str(root / "data"), str(root / "split.json"), str(root / "p.npz"))
    return root


def _cfg(folders, out, **kw) -> FitConfig:
    base = dict(out=str(out), data=str(folders / "p.npz"), backend="keras3", arch="tiny", image_size=32, epochs=1,
                batch_size=8, warmup_epochs=0, augment="strong", mixup=0.5)
    return FitConfig(**{**base, **kw})


def test_pack_holds_the_train_and_val_files_unchanged_and_no_test_image(folders):
    from scopelite.train.pack import unpack

    images, labels, ids, split, names = unpack(str(folders / "p.npz"), 32)
    saved = json.loads((folders / "split.json").read_text())
    assert ids == saved["train"] + saved["val"] and not set(ids) & set(saved["test"])
    assert list(split).count("train") == 32 and list(split).count("val") == 8
    assert names == NAMES and list(labels) == [NAMES.index(i.split("/")[0]) for i in ids]
    for k in (0, 17, 39):  # PNG is lossless: the pixels that celltrain reads
        ref = cv2.cvtColor(cv2.imread(str(folders / "data" / ids[k])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(images[k], ref)


def test_a_pack_is_made_again_over_its_own_file(folders, tmp_path):
    """OUT may be an earlier pack (only another kind of file is refused)."""
    import shutil

    from conftest import invoke_cli

    shutil.copy(folders / "p.npz", tmp_path / "p.npz")
    r = invoke_cli("celltrain", "pack", str(folders / "data"), str(folders / "split.json"), str(tmp_path / "p.npz"))
    assert r.returncode == 0 and json.loads(r.stdout)["train"] == 32, r.stderr[-2000:]


def test_keras3_refuses_what_it_cannot_do_before_reading_anything(folders, tmp_path):
    from scopelite.train.keras3 import check

    check(_cfg(folders, tmp_path / "ok"))  # the defaults of the smoke run below pass
    for kw, msg in ((dict(aug={"randaugment": 0.5}), "randaugment"), (dict(aug={"shot": None}), "shot"),
                    (dict(progressive=True), "--progressive"), (dict(weights="x.keras"), "--weights"),
                    (dict(balance="oversample"), "oversample"), (dict(average_last=3), "--average-last"),
                    (dict(data=str(folders / "split.json")), "pack"), (dict(data=str(tmp_path / "no.npz")), "no such")):
        with pytest.raises(UserError, match=msg):
            check(_cfg(folders, tmp_path / "x", **kw))
    medmnist = tmp_path / "m.npz"  # a .npz dataset celltrain fit reads, but not a pack
    np.savez(medmnist, images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(UserError, match="not a pack"):
        check(_cfg(folders, tmp_path / "x", data=str(medmnist)))
    # and the tf-keras trainer refuses the Keras 3 options
    from scopelite.train.fit import fit

    with pytest.raises(UserError, match="--ema needs --backend keras3"):
        fit(FitConfig(out=str(tmp_path / "t"), arch="tiny", ema=0.99))


def test_the_keras3_modules_import_no_tensorflow():
    """What a GPU machine without TensorFlow imports for celltrain fit --backend keras3."""
    code = ("import sys; import scopelite.train.cli, scopelite.train.keras3, scopelite.train.pack; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras', 'scopelite.train._keras') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_augment_layer_keeps_range_and_shape_and_is_identity_at_inference():
    import keras

    from scopelite.train import keras3_augment, recipe

    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    ops = recipe.resolve_ops("strong", 0.7, {"hed": 0.7, "rotate": 0.7, "domain": 0.5})
    layer = keras3_augment.make_layer(keras, ops, p=1.0, seed=0)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 and np.abs(y - x).mean() > 5
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    for name in keras3_augment.BATCHED:  # each op alone moves the pixels, and strength 0 is the identity
        one = keras3_augment.make_layer(keras, {name: 0.9}, flips=False, p=1.0, seed=1)
        assert np.abs(np.asarray(one(x, training=True)) - x).mean() > 0.5, name
    assert np.array_equal(np.asarray(keras3_augment.make_layer(keras, {}, flips=False)(x, training=True)), x)
    with pytest.raises(ValueError, match="randaugment"):
        keras3_augment.make_layer(keras, {"randaugment": 0.5})


def test_hed_and_rotation_on_the_accelerator_match_celltrain():
    """Both spellings of the deterministic transforms give the same pixels."""
    import keras

    from scopelite.train._keras import tf
    from scopelite.train.augment import hed_jitter, rotate
    from scopelite.train.keras3_augment import hed_jitter as hed_batch
    from scopelite.train.keras3_augment import rotate as rotate_batch

    x = np.random.default_rng(1).integers(0, 256, (2, 24, 24, 3)).astype(np.float32)
    alpha, beta = np.array([1.3, 0.8, 1.1], np.float32), np.array([0.02, -0.03, 0.01], np.float32)
    got = np.asarray(hed_batch(keras.ops, x, alpha.reshape(1, 1, 1, 3), beta.reshape(1, 1, 1, 3)))
    want = np.stack([hed_jitter(tf.constant(im), alpha, beta).numpy() for im in x])
    np.testing.assert_allclose(got, want, atol=0.05)
    degrees = np.array([[12.0], [-7.0]], np.float32)
    got = np.asarray(rotate_batch(keras, x, degrees))
    want = np.stack([rotate(tf.constant(im), float(d)).numpy() for im, d in zip(x, degrees[:, 0])])
    np.testing.assert_allclose(got, want, atol=0.05)


def test_keras3_fit_prints_no_tensorflow_start_up_lines(folders, tmp_path):
    """As tf-keras fit: TensorFlow's own start-up lines (oneDNN, cudart, cuInit, CPU features, tf.data's allocator)
    stay out of a Keras 3 fit's terminal unless --verbose; a new process, as a user runs it."""
    r = run_cli("celltrain", "fit", "--backend", "keras3", "--data", str(folders / "p.npz"), "--out",
                str(tmp_path / "w"), "--arch", "tiny", "--image-size", "32", "--epochs", "1", "--batch-size", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [line for line in r.stderr.splitlines() if line.startswith(("I0000", "E0000", "W0000", "WARNING: All"))
                or "oneDNN" in line or "cpu_feature_guard" in line], r.stderr[-3000:]


def test_keras3_fit_then_import_gives_a_run_folder(folders, tmp_path, monkeypatch):
    """The smoke run: tiny network, 1 epoch, through the CLI; the imported model loads and answers as trained."""
    from scopelite.train import fit as fit_mod
    from scopelite.train import keras3_import

    predicted = []  # the bytes of every image array import predicts: each held-out set once

    def counting(model, images, *a, **kw):
        predicted.append(images.tobytes())
        return real_predict(model, images, *a, **kw)

    real_predict = keras3_import.predict
    w, run = tmp_path / "w", tmp_path / "run"
    r = invoke_cli("celltrain", "fit", "--backend", "keras3", "--data", str(folders / "p.npz"), "--out", str(w),
                   "--arch", "tiny", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
                   "--warmup-epochs", "0", "--augment", "strong", "--aug", "hed=0.5", "--mixup", "0.5",
                   "--ema", "0.9")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "celltrain import" in r.stdout  # it says what to do next
    assert [f.name for f in w.glob("weights-final-*.npz")] == ["weights-final-0.npz"]
    hist = json.loads((w / "history.json").read_text())
    assert hist["config"]["backend"] == "keras3" and hist["config"]["aug"] == {"hed": 0.5}
    assert len(hist["history"]) == 1 and hist["result"]["backend"] == "tensorflow"

    monkeypatch.setattr(keras3_import, "predict", counting)
    monkeypatch.setattr(fit_mod, "predict", counting)
    r = invoke_cli("celltrain", "import", str(w), "--split", str(folders / "split.json"),
                   "--data", str(folders / "data"), "--out", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(predicted) == 2 and len(set(predicted)) == 2  # val and test, once each
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["val_top1_agreement_with_trainer"] == 1.0 and res["val_max_abs_prob_diff_with_trainer"] < 1e-4
    assert {f.name for f in run.iterdir()} >= {"model.keras", "model.json", "split.json", "config.json"}
    from scopelite.train.run import load_keras_bundle

    sc, model = load_keras_bundle(run / "model.keras")  # the sidecar is read and the model loads in tf-keras
    assert model.output_shape == (None, 8) and list(sc.labels) == NAMES
    training = sc.provenance.training
    assert training.extra["trained_with"]["backend"] == "tensorflow"
    assert training.extra["trained_with"]["val_top1_agreement_with_trainer"] == 1.0
    assert training.config["image_size"] == 32 and training.config["backend"] == "keras3"
    # a second import onto the same run is refused in one line, and writes nothing
    before = (run / "model.keras").stat().st_mtime_ns
    r = invoke_cli("celltrain", "import", str(w), "--split", str(folders / "split.json"),
                   "--data", str(folders / "data"), "--out", str(run))
    assert_one_line_error(r, "already holds a model")
    assert (run / "model.keras").stat().st_mtime_ns == before
    # so is a folder that holds no weights
    r = invoke_cli("celltrain", "import", str(tmp_path), "--split", str(folders / "split.json"),
                   "--data", str(folders / "data"), "--out", str(tmp_path / "run2"))
    assert_one_line_error(r, "history.json")
    assert not (tmp_path / "run2").exists()
    # weights copied back cut short or empty, or the val predictions of another split: one line, nothing written
    import shutil

    w2 = tmp_path / "w2"
    shutil.copytree(w, w2)
    chunk = w2 / "weights-final-0.npz"
    for damage, said in ((lambda b: b[:len(b) // 2], "damaged .npz"), (lambda b: b"", "is empty (0 bytes)")):
        chunk.write_bytes(damage((w / chunk.name).read_bytes()))
        r = invoke_cli("celltrain", "import", str(w2), "--split", str(folders / "split.json"),
                       "--data", str(folders / "data"), "--out", str(tmp_path / "run2"))
        assert_one_line_error(r, said)  # a BadZipFile traceback; "unexpected end of input"
    shutil.copy(w / chunk.name, chunk)
    np.save(w2 / "val-probs.npy", np.load(w / "val-probs.npy")[:-1])
    r = invoke_cli("celltrain", "import", str(w2), "--split", str(folders / "split.json"),
                   "--data", str(folders / "data"), "--out", str(tmp_path / "run2"))
    assert_one_line_error(r, "give --split the split.json the pack was made from")  # imported, unchecked
    assert not (tmp_path / "run2").exists()


@pytest.mark.slow
def test_efficientnetv2b0_weights_arrive_intact_from_keras3(folders, tmp_path):
    """EfficientNetV2B0 trained one epoch under Keras 3, imported into tf-keras: same val predictions,
    and the weights sent back in files under 16 MiB (what a lent machine returns)."""
    from scopelite.train import keras3
    from scopelite.train.keras3_import import import_weights

    w = tmp_path / "w"
    keras3.fit(_cfg(folders, w, arch="efficientnetv2b0", ema=0.0), log=lambda s: None)
    assert sorted(f.name for f in w.glob("weights-final-*.npz")) == ["weights-final-0.npz", "weights-final-1.npz"]
    assert all(f.stat().st_size <= 16 * 2**20 for f in w.iterdir())
    res = import_weights(str(w), str(folders / "split.json"), str(folders / "data"), str(tmp_path / "run"))
    assert res["val_top1_agreement_with_trainer"] == 1.0 and res["val_max_abs_prob_diff_with_trainer"] < 1e-4


def test_import_refuses_what_does_not_belong_together(folders, tmp_path):
    """Found by a hunt (session 31): each was exit 0 with a wrong model, or a traceback. One line each, nothing
    written: another class list in --data (labels shifted by one), a non-empty --out (a killed fit's config.json
    replaced) or one inside --data, NaN weights, weights of another shape, a damaged seed; a null result is fine."""
    import importlib
    import shutil

    importlib.import_module("scopelite.train._keras")  # tf-keras before the Keras 3 fit loads TensorFlow (import needs it)

    w = tmp_path / "w"
    r = invoke_cli("celltrain", "fit", "--backend", "keras3", "--data", str(folders / "p.npz"), "--out", str(w),
                   "--arch", "tiny", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--warmup-epochs", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    split, data = str(folders / "split.json"), folders / "data"

    def imp(weights=w, split=split, data=data, out=tmp_path / "run"):
        return invoke_cli("celltrain", "import", str(weights), "--split", str(split), "--data", str(data),
                          "--out", str(out))

    extra = tmp_path / "extra"  # a ninth class sorted first: every label would shift by one
    shutil.copytree(data, extra)
    shutil.copytree(data / "platelet", extra / "aaa")
    assert_one_line_error(imp(data=extra), "'aaa' is not one of the model's classes")
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    assert_one_line_error(imp(out=killed), "is not empty")
    assert (killed / "config.json").read_text() == "{}"
    assert_one_line_error(imp(out=data / "basophil" / "run"), "is inside --data")
    bad = tmp_path / "bad"
    shutil.copytree(w, bad)
    chunk = bad / "weights-final-0.npz"
    ws = dict(np.load(w / chunk.name))
    first = sorted(ws)[0]
    np.savez(chunk, **{**ws, first: np.full_like(ws[first], np.nan)})
    assert_one_line_error(imp(weights=bad), "hold NaN or infinity")
    np.savez(chunk, **{**ws, first: np.zeros(ws[first].shape + (1,), ws[first].dtype)})
    assert_one_line_error(imp(weights=bad), "of another shape")
    shutil.copy(w / chunk.name, chunk)
    saved = json.loads((folders / "split.json").read_text())
    for seed in ("x", None, 1e400, -1):
        (tmp_path / "s.json").write_text(json.dumps({**saved, "seed": seed}))
        assert_one_line_error(imp(split=tmp_path / "s.json"), "is not a seed")
    assert not (tmp_path / "run").exists()
    theirs = np.load(w / "val-probs.npy")
    sure = np.eye(8, dtype=np.float32)[np.argsort(theirs, axis=1)[:, -2]]  # sure of its second choice everywhere
    np.save(bad / "val-probs.npy", sure)
    assert_one_line_error(imp(weights=bad), "do not belong together")
    near = theirs.copy()  # one bf16 near-tie turned: 1 of 8 images, 12.5 %, is no reason to refuse
    order = np.argsort(near[0])
    near[0, order[-1]], near[0, order[-2]] = near[0, order[-2]], near[0, order[-1]]
    np.save(bad / "val-probs.npy", near)
    hist = json.loads((w / "history.json").read_text())
    (bad / "history.json").write_text(json.dumps({**hist, "result": None}))  # an AttributeError traceback
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".DS_Store").write_text("")  # a folder made beforehand by a file browser is empty
    r = imp(weights=bad)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"] == str(data.resolve()) and cfg["out"] == str((tmp_path / "run").resolve())  # as fit writes
    (bad / "val-probs.npy").unlink()  # not copied with the weights: the promised check was skipped without a word
    r = imp(weights=bad, out=tmp_path / "run2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not checked: no val-probs.npy beside the weights" in r.stderr
    assert "not checked" in json.loads(r.stdout.splitlines()[-1])["trainer_agreement"]


def test_pack_refuses_a_split_that_would_pack_test_or_outside_images(folders, tmp_path):
    """A test image also listed in train, an id leading outside DATA: refused. A class folder spelled otherwise
    (Basophil), which celltrain fit reads as basophil, is packed."""
    import shutil

    saved = json.loads((folders / "split.json").read_text())
    for change, said in (({"train": saved["train"] + saved["test"][:1]}, "in its train and test splits"),
                         ({"train": saved["train"] + ["basophil/../../../../etc/hostname"]}, "is not inside")):
        (tmp_path / "s.json").write_text(json.dumps({**saved, **change}))
        r = invoke_cli("celltrain", "pack", str(folders / "data"), str(tmp_path / "s.json"), str(tmp_path / "p.npz"))
        assert_one_line_error(r, said)
        assert not (tmp_path / "p.npz").exists()
    data = tmp_path / "data"
    shutil.copytree(folders / "data", data)
    (data / "basophil").rename(data / "Basophil")
    spelled = {**saved, **{s: [x.replace("basophil/", "Basophil/") for x in saved[s]] for s in ("train", "val", "test")}}
    (tmp_path / "s.json").write_text(json.dumps(spelled))
    r = invoke_cli("celltrain", "pack", str(data), str(tmp_path / "s.json"), str(tmp_path / "p.npz"))
    assert r.returncode == 0 and json.loads(r.stdout)["train"] == 32, r.stderr[-2000:]


def test_pack_refuses_an_image_that_cannot_be_decoded(folders, tmp_path):
    """A truncated PNG was packed, exit 0; only unpack on the GPU machine found it (celltrain fit refuses it)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folders / "data", data)
    saved = json.loads((folders / "split.json").read_text())
    bad = data / saved["val"][0]
    bad.write_bytes(bad.read_bytes()[:100])
    r = invoke_cli("celltrain", "pack", str(data), str(folders / "split.json"), str(tmp_path / "p.npz"))
    assert_one_line_error(r, f"cannot use {bad}", "cannot be decoded")
    assert not (tmp_path / "p.npz").exists()


def test_an_import_interrupted_before_its_sidecar_leaves_no_run_and_runs_again(folders, tmp_path, monkeypatch):
    """Ctrl-C after model.keras was saved and before its sidecar left a half-made run folder (config.json, split.json,
    model.keras, no model.json), and the same import then refused it: "already holds a model"."""
    from scopelite.train import keras3
    from scopelite.train import keras3_import as imp_lib
    from scopelite.train import model as model_lib

    w = tmp_path / "w"  # the weights folder a keras3 fit writes, of an untrained tiny network
    keras3.save_weights(model_lib.build("tiny", 32, 8), w, "final")
    cfg = _cfg(folders, tmp_path / "k3").to_json()
    (w / "history.json").write_text(json.dumps({"config": cfg, "history": {}, "result": {"epochs": 1}}))
    real = imp_lib.write_sidecar

    def ctrl_c(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(imp_lib, "write_sidecar", ctrl_c)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        imp_lib.import_weights(str(w), str(folders / "split.json"), str(folders / "data"), str(run))
    assert not run.exists() and not list(tmp_path.glob(".scopelite*")), list(tmp_path.iterdir())
    monkeypatch.setattr(imp_lib, "write_sidecar", real)
    res = imp_lib.import_weights(str(w), str(folders / "split.json"), str(folders / "data"), str(run))
    assert res["out"] == str(run / "model.keras")
    assert {f.name for f in run.iterdir()} == {"model.keras", "model.json", "split.json", "config.json"}
