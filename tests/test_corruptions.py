import numpy as np
import pytest

from scopelite.train import corruptions as C
from scopelite.train.synth import make_crops


@pytest.fixture(scope="module")
def crops():
    return make_crops(2, size=96, seed=5)[0]


@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_each_corruption_is_deterministic_and_grows_with_severity(crops, name):
    img = crops[3]
    diffs = []
    for s in C.SEVERITIES:
        a = C.corrupt(img, name, s, seed=1)
        assert a.shape == img.shape and a.dtype == np.uint8
        assert np.array_equal(a, C.corrupt(img, name, s, seed=1))
        diffs.append(np.abs(a.astype(int) - img.astype(int)).mean())
    assert diffs[0] > 0, "severity 1 must change the image"
    assert diffs[-1] > diffs[0], f"severity 5 must change it more than 1: {diffs}"


@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_each_corruption_works_at_the_smallest_image_size(name):
    """--image-size 16 (the tiny network's least): motion blur's kernel rounded to 0 px, an IndexError in every
    celltrain evaluate, cellcompress and bench of such a run."""
    img = make_crops(1, size=16, seed=5)[0][0]
    for s in C.SEVERITIES:
        a = C.corrupt(img, name, s, seed=1)
        assert a.shape == img.shape and a.dtype == np.uint8 and a.mean() > 5


def test_brightness_does_not_wrap(crops):
    up = C.corrupt(crops[0], "brightness_up", 5).astype(int)
    assert (up >= crops[0].astype(int)).all()


def test_corrupted_copy_is_seeded(crops):
    a, plan_a = C.corrupted_copy(crops, seed=3)
    b, plan_b = C.corrupted_copy(crops, seed=3)
    c, _ = C.corrupted_copy(crops, seed=4)
    assert np.array_equal(a, b) and plan_a == plan_b
    assert not np.array_equal(a, c)
    assert all(n in C.CORRUPTIONS and 1 <= s <= 5 for n, s in plan_a)
    with pytest.raises(ValueError):
        C.corrupt(crops[0], "nope", 1)


def test_evaluate_writes_report(tiny_run):
    import json

    from scopelite.train.evaluate import evaluate

    res = evaluate(tiny_run["keras"], log=lambda _: None)
    assert res["clean"]["accuracy"] == pytest.approx(tiny_run["fit_metrics"]["test"]["accuracy"])
    assert 0 <= res["corrupted"]["accuracy"] <= 1 and res["corrupted"]["n"] == res["clean"]["n"]
    assert set(res["clean"]["per_class"]) == set(json.loads((tiny_run["dir"] / "split.json").read_text())["class_names"])
    assert (tiny_run["dir"] / "confusion.png").stat().st_size > 1000
    assert json.loads((tiny_run["dir"] / "evaluation.json").read_text())["split"] == "test"


def test_evaluate_with_tta_scores_the_mean_over_views(tiny_run):
    import json

    from scopelite.edge.tta import views
    from scopelite.train.evaluate import evaluate
    from scopelite.train.run import heldout_data, load_keras_bundle

    res = evaluate(tiny_run["keras"], log=lambda _: None, tta=4)
    assert res["tta_views"] == ["identity", "flip_lr", "flip_ud", "rot180"]
    sc, model = load_keras_bundle(tiny_run["keras"])
    ds, split = heldout_data(sc, tiny_run["keras"], None)
    test = ds.subset(split["test"])
    probs = np.mean([model.predict(v.astype(np.float32), verbose=0) for v in views(test.images, 4)], axis=0)
    assert res["clean"]["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels).mean()))
    saved = json.loads((tiny_run["dir"] / "evaluation-tta4.json").read_text())
    assert saved["clean"]["accuracy"] == res["clean"]["accuracy"]
