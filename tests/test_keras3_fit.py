"""benchmarks/keras3_fit.py: pack a split, train with Keras 3, import into a scopelite run folder.

The script runs under Keras 3 (JAX on a lent GPU machine); here its train step runs on Keras 3's
TensorFlow backend in a subprocess, since this process holds tf-keras.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from scopelite.train.synth import make_crops

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "keras3_fit.py"
NAMES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
         "neutrophil", "platelet"]


def _env() -> dict:
    """Keras 3 on its TensorFlow backend (this process holds tf-keras)."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """8 class folders of generated 32-px crops (PNG) and a saved split, as celltrain writes it."""
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
    return root


def test_pack_holds_the_train_and_val_files_unchanged_and_no_test_image(folders):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import keras3_fit
    finally:
        sys.path.remove(str(SCRIPT.parent))
    info = keras3_fit.pack(str(folders / "data"), str(folders / "split.json"), str(folders / "p.npz"))
    assert info["train"] == 32 and info["val"] == 8
    images, labels, ids, split, names = keras3_fit.unpack(str(folders / "p.npz"), 32)
    saved = json.loads((folders / "split.json").read_text())
    assert ids == saved["train"] + saved["val"] and not set(ids) & set(saved["test"])
    assert names == NAMES and list(labels) == [NAMES.index(i.split("/")[0]) for i in ids]
    for k in (0, 17, 39):  # PNG is lossless: the pixels that celltrain reads
        ref = cv2.cvtColor(cv2.imread(str(folders / "data" / ids[k])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(images[k], ref)


def test_augment_layer_keeps_range_and_shape_and_is_identity_at_inference(folders):
    code = (
        "import sys, numpy as np, keras; sys.path.insert(0, %r); import keras3_fit as k\n"
        "x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype('float32')\n"
        "layer = k.make_augment_layer(keras, 0.7, p=1.0, seed=0)\n"
        "y = np.asarray(layer(x, training=True)); z = np.asarray(layer(x, training=False))\n"
        "print(y.shape == x.shape, float(y.min()) >= 0, float(y.max()) <= 255, np.array_equal(z, x),"
        " float(np.abs(y - x).mean()) > 5)\n" % str(SCRIPT.parent))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-5:] == ["True"] * 5


def test_hed_and_rotation_on_the_gpu_match_celltrain(folders, tmp_path):
    """keras3_fit's --hed re-spells scopelite's HED jitter (the GPU machine has no scopelite): same pixels."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import keras3_fit
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from scopelite.train._keras import tf
    from scopelite.train.augment import RGB_FROM_HED, hed_jitter

    np.testing.assert_array_equal(keras3_fit.RGB_FROM_HED, RGB_FROM_HED)
    x = np.random.default_rng(1).integers(0, 256, (2, 24, 24, 3)).astype(np.float32)
    alpha, beta = np.array([1.3, 0.8, 1.1], np.float32), np.array([0.02, -0.03, 0.01], np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, keras; sys.path.insert(0, %r); import keras3_fit as k\n"
            "x = np.load(%r); a = np.array(%r, 'float32').reshape(1, 1, 1, 3); b = np.array(%r, 'float32').reshape(1, 1, 1, 3)\n"
            "np.save(%r, np.asarray(k.hed_jitter(keras.ops, x, a, b)))\n"
            "layer = k.make_augment_layer(keras, 0.7, p=1.0, seed=0, hed=0.7, rotate=0.7)\n"
            "y = np.asarray(layer(x, training=True))\n"
            "print(y.shape == x.shape, float(y.min()) >= 0, float(y.max()) <= 255, float(np.abs(y - x).mean()) > 5)\n"
            % (str(SCRIPT.parent), str(tmp_path / "x.npy"), alpha.tolist(), beta.tolist(), str(tmp_path / "g.npy")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.split() == ["True"] * 4
    want = np.stack([hed_jitter(tf.constant(im), alpha, beta).numpy() for im in x])
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), want, atol=0.05)


@pytest.mark.slow
def test_keras3_weights_arrive_intact_in_a_scopelite_run(folders, tmp_path):
    """EfficientNetV2B0 trained one epoch under Keras 3, imported into tf-keras: same val predictions."""
    pack = tmp_path / "p.npz"
    assert _run("pack", folders / "data", folders / "split.json", pack).returncode == 0
    w = tmp_path / "w"
    p = _run("train", pack, "--out", w, "--epochs", "1", "--batch-size", "8", "--image-size", "32",
             "--warmup-epochs", "0", "--precision", "float32", "--ema", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(f.name for f in w.glob("weights-final-*.npz")) == ["weights-final-0.npz", "weights-final-1.npz"]
    assert all(f.stat().st_size <= 16 * 2**20 for f in w.iterdir())  # what a lent machine can send back
    run = tmp_path / "run"
    p = _run("import", w, "--split", folders / "split.json", "--data", folders / "data", "--out", run)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["val_top1_agreement_with_trainer"] == 1.0
    assert res["val_max_abs_prob_diff_with_trainer"] < 1e-4
    assert {f.name for f in run.iterdir()} >= {"model.keras", "model.json", "split.json", "config.json"}
    side = json.loads((run / "model.json").read_text())
    assert side["provenance"]["trained_with"]["backend"] == "tensorflow"
    assert side["provenance"]["config"]["image_size"] == 32
    # a second import onto the same run is refused without a traceback, and writes nothing
    before = (run / "model.keras").stat().st_mtime_ns
    p = _run("import", w, "--split", folders / "split.json", "--data", folders / "data", "--out", run)
    assert p.returncode == 1 and "already holds a model" in p.stderr and "Traceback" not in p.stderr
    assert (run / "model.keras").stat().st_mtime_ns == before
    # a missing input is one line, not a traceback
    p = _run("import", tmp_path / "nowhere", "--split", folders / "split.json", "--data", folders / "data",
             "--out", tmp_path / "run2")
    assert p.returncode == 1 and "no such file or folder" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run2").exists()
