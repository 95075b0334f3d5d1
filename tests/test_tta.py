"""Test-time augmentation (celledge --tta, cellcompress bench --tta)."""
import json

import numpy as np
import pytest

from conftest import run_cli
from scopelite.edge.bundle import InputSpec
from scopelite.edge.classifier import FakeClassifier
from scopelite.edge.errors import UserError
from scopelite.edge.tta import TTAClassifier, average_over_views, view_names, views

LABELS = ["a", "b"]


def test_views_are_the_dihedral_group_without_repeats():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    for n in (1, 2, 4, 8):
        vs = views(x, n)
        assert len(vs) == n == len(view_names(n))
        assert all(v.shape == x.shape and v.flags.c_contiguous for v in vs)
        assert len({v.tobytes() for v in vs}) == n  # all distinct on an asymmetric image
    np.testing.assert_array_equal(views(x, 2)[1][0, :, :, 0], x[0, :, ::-1, 0])
    rect = np.zeros((1, 4, 6, 3))
    assert [v.shape for v in views(rect, 4)] == [rect.shape] * 4
    with pytest.raises(UserError, match="square"):
        views(rect, 8)
    with pytest.raises(UserError, match="1 \\(off\\), 2, 4 or 8"):
        views(x, 3)


def test_tta_classifier_averages_the_scores_of_the_views():
    # scores that depend on where the bright pixel is: left half -> a, right half -> b
    def fn(crops):
        right = crops[:, :, crops.shape[2] // 2:].sum(axis=(1, 2, 3)) > 0
        return np.stack([~right, right], 1).astype(float)

    spec = InputSpec(height=4, width=4, dtype="uint8")
    inner = FakeClassifier(LABELS, spec, fn)
    crop = np.zeros((1, 4, 4, 3), np.uint8)
    crop[0, 0, 0] = 255  # top-left
    np.testing.assert_allclose(inner.classify(crop)[0], [1, 0])
    tta = TTAClassifier(inner, 2)  # identity + left-right flip: one says a, the other b
    np.testing.assert_allclose(tta.classify(crop)[0], [0.5, 0.5])
    assert inner.calls == 3
    np.testing.assert_allclose(TTAClassifier(inner, 8).classify(crop)[0], [0.5, 0.5])
    assert tta.labels == LABELS and tta.input_spec == spec
    assert tta.calls == inner.calls  # other attributes come from the wrapped classifier
    np.testing.assert_allclose(average_over_views(fn, crop, 1), fn(crop))
    with pytest.raises(UserError, match="square"):
        TTAClassifier(FakeClassifier(LABELS, InputSpec(height=4, width=6, dtype="uint8")), 8)


def test_celledge_classify_with_tta_on_the_packaged_model(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    img = tmp_path / "cell.png"
    cv2.imwrite(str(img), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    plain = run_cli("celledge", "classify", str(img), "--json", "-k", "8")
    tta = run_cli("celledge", "classify", str(img), "--json", "-k", "8", "--tta", "4")
    assert plain.returncode == 0 and tta.returncode == 0, tta.stderr
    a, b = json.loads(plain.stdout), json.loads(tta.stdout)
    assert abs(sum(c["score"] for c in b["top_k"]) - 1) < 0.02  # a mean of probabilities
    assert a["top_k"] != b["top_k"]  # four views of noise do not score like one
    bad = run_cli("celledge", "classify", str(img), "--tta", "3")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_model_whose_sidecar_advises_views_runs_over_them_unless_tta_says_otherwise(tmp_path):
    """An adapted model's sidecar says 8 views (celltrain fit --preset few-shot): classify and watch use them by
    default, say so on stderr, and --tta still overrides; celledge info names it; older sidecars mean 1."""
    import shutil

    import cv2

    from scopelite.edge.bundle import load_sidecar, sidecar_path
    from scopelite.edge.packaged import default_model

    rng = np.random.default_rng(1)
    img = tmp_path / "cell.png"
    cv2.imwrite(str(img), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    model = tmp_path / "adapted.tflite"
    shutil.copy(default_model(), model)
    sc = json.loads(sidecar_path(default_model()).read_text())
    assert sc.get("views", 1) == 1  # the shipped model: one view (decision 15d)
    sidecar_path(model).write_text(json.dumps({**sc, "views": 8}))
    assert load_sidecar(model).views == 8

    def run(*extra):
        r = run_cli("celledge", "classify", "--model", str(model), str(img), "--json", "-k", "8", *extra)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)["top_k"], r.stderr

    advised, note = run()
    eight, said = run("--tta", "8")
    one, quiet = run("--tta", "1")
    assert advised == eight and advised != one
    assert "runs over 8 flipped/rotated views" in note and "--tta 1" in note
    assert "views" not in said and "views" not in quiet
    info = run_cli("celledge", "info", str(model))
    assert info.returncode == 0 and "runs over 8 flipped/rotated views by default" in info.stdout
    field = tmp_path / "fields"
    field.mkdir()
    cv2.imwrite(str(field / "f.png"), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    w = run_cli("celledge", "watch", str(field), "--model", str(model), "--mode", "field", "--exit-on-eof")
    assert w.returncode == 0, w.stderr[-2000:]
    assert json.loads(w.stdout.splitlines()[-1])["summary"]["views"] == 8
    w = run_cli("celledge", "watch", str(field), "--model", str(model), "--mode", "field", "--exit-on-eof",
                "--tta", "2")
    assert json.loads(w.stdout.splitlines()[-1])["summary"]["views"] == 2


def test_bench_scores_each_model_with_each_view_count(tiny_run, tmp_path):
    from scopelite.compress.bench import bench

    lines: list[str] = []
    r = bench([str(tiny_run["tflite"])], tmp_path / "b", limit=16, tta=(1, 4), log=lines.append)
    assert not any("fewer than the classes" in x for x in lines)
    bench([str(tiny_run["tflite"])], tmp_path / "one", limit=1, log=lines.append)  # scored 8 without a word
    assert any("--limit 1 is fewer than the classes: one image of each is scored (8 images)" in x for x in lines)
    names = list(r["models"])
    assert names == ["model.tflite", "model.tflite tta4"]
    assert r["tta"] == [1, 4]
    assert set(r["accuracy"][names[1]]) == set(r["accuracy"][names[0]])
    with pytest.raises(UserError, match="2, 4 or 8"):
        bench([str(tiny_run["tflite"])], tmp_path / "c", limit=16, tta=(1, 5), log=lambda _: None)
    cli = run_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--out", str(tmp_path / "d"), "--tta", "1,x")
    assert cli.returncode == 2 and "comma-separated" in cli.stderr
