"""celltrain choose: validation-only choice, test beside it, and prediction ensembles."""
import json
import shutil

import pytest

from conftest import assert_one_line_error, invoke_cli
from scopelite.edge.bundle import sha256_file


def test_choose_scores_candidates_and_ensembles(tiny_run, tmp_path):
    k = str(tiny_run["keras"])
    out = tmp_path / "sel.json"
    r = invoke_cli("celltrain", "choose", f"a={k}", f"b={tiny_run['dir']}", "--tta", "1", "--ensembles",
                   "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    a = res["candidates"]["a tta1"]
    # the same test split and the same predictions as fit's own scoring
    assert a["test"] == pytest.approx(round(100 * tiny_run["fit_metrics"]["test"]["accuracy"], 2))
    assert a["val_score"] == pytest.approx((a["val"] + a["val_corrupted"]) / 2, abs=0.01)
    assert a["test_ci95"][0] <= a["test"] <= a["test_ci95"][1]
    # a model averaged with itself predicts what it predicts alone
    assert list(res["ensembles"]) == ["a+b"]
    assert {s: res["ensembles"]["a+b"][s] for s in ("val", "val_corrupted", "test", "test_corrupted")} == \
        {s: a[s] for s in ("val", "val_corrupted", "test", "test_corrupted")}
    assert res["chosen"] in ("a tta1", "b tta1")
    assert "highest val_score" in r.stdout and "1 ensembles" in r.stdout
    assert f"b ({tiny_run['dir']}) is the same model as a: it is scored twice" in r.stderr  # it was not said
    r = invoke_cli("celltrain", "choose", f"a={k}", "--tta", "1", "--out", str(out))  # its own file: replaced
    assert r.returncode == 0 and list(json.loads(out.read_text())["candidates"]) == ["a tta1"], r.stderr[-2000:]


def test_choose_refuses_candidates_of_another_split_and_bad_options(tiny_run, tmp_path):
    k = str(tiny_run["keras"])
    other = tmp_path / "other"
    shutil.copytree(tiny_run["dir"], other, ignore=shutil.ignore_patterns("int8", "checkpoints", "tensorboard"))
    split = json.loads((other / "split.json").read_text())
    split["val"], split["test"] = split["test"], split["val"]
    (other / "split.json").write_text(json.dumps(split))
    out = tmp_path / "sel.json"
    # a split edited after training is not the run's own (run.split_file checks the sidecar's hash)
    r = invoke_cli("celltrain", "choose", f"a={k}", str(other), "--tta", "1", "--out", str(out))
    assert_one_line_error(r, "is not the split", "sha256 differs")
    assert not out.exists()
    # a run trained on that other split (its sidecar records it) is of another lineage
    sc = json.loads((other / "model.json").read_text())
    sc["provenance"]["training"]["split"]["sha256"] = sha256_file(other / "split.json")
    (other / "model.json").write_text(json.dumps(sc))
    r = invoke_cli("celltrain", "choose", f"a={k}", str(other), "--tta", "1", "--out", str(out))
    assert_one_line_error(r, "does not share", "one lineage")
    assert not out.exists()
    # one candidate cannot make an ensemble; view counts are 1, 2, 4 or 8: usage errors, not tracebacks
    r = invoke_cli("celltrain", "choose", f"a={k}", "--tta", "1", "--ensembles", "--out", str(out))
    assert_one_line_error(r, "--ensembles needs")
    r = invoke_cli("celltrain", "choose", f"a={k}", "--tta", "1,3", "--out", str(out))
    assert_one_line_error(r, "--tta", code=2)
    r = invoke_cli("celltrain", "choose", f"a={k}", f"a={k}", "--out", str(out))
    assert_one_line_error(r, "two candidates are named 'a'", code=2)


def test_choose_loads_each_candidate_once(tiny_run, tmp_path, monkeypatch):
    from scopelite.train import choose as choose_mod

    loads = []

    def counting(path):
        loads.append(str(path))
        return load(path)

    load = choose_mod.load_keras_bundle
    monkeypatch.setattr(choose_mod, "load_keras_bundle", counting)
    other = tmp_path / "b"
    shutil.copytree(tiny_run["dir"], other, ignore=shutil.ignore_patterns("int8", "checkpoints", "tensorboard"))
    res = choose_mod.choose({"a": str(tiny_run["keras"]), "b": str(other)}, tmp_path / "sel.json", tta=(1,),
                            log=lambda _: None)
    assert sorted(loads) == sorted([str(tiny_run["keras"]), str(other / "model.keras")])
    assert set(res["candidates"]) == {"a tta1", "b tta1"}


def test_choose_refuses_candidates_of_another_input_size(tiny_run, tiny_run_48, tmp_path):
    # the same data, seed and split: only the input size differs (it ended in a Keras shape traceback)
    out = tmp_path / "sel.json"
    r = invoke_cli("celltrain", "choose", f"a={tiny_run['dir']}", f"b={tiny_run_48['dir']}", "--tta", "1",
                   "--out", str(out))
    assert_one_line_error(r, "b (", "48x48", "a 32x32", "--image-size")
    assert not out.exists()
