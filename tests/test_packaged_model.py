"""The int8 model shipped in the package works right after install, on real-looking input."""
import json

import numpy as np

from conftest import run_cli
from scopelite.edge.bundle import CLASS_NAMES, load_sidecar
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model


def test_packaged_bundle_is_valid_and_says_what_it_is():
    path = default_model()
    sc = load_sidecar(path)  # hash, schema and file name checked
    assert sc.labels == CLASS_NAMES and sc.format == "tflite" and "cpu" in sc.runtimes
    assert (sc.input.height, sc.input.width, sc.input.dtype) == (96, 96, "uint8")
    assert sc.synthetic_data is False and "pbc96" in sc.provenance.training.data.description
    assert sc.metrics["clean"]["accuracy"] >= 0.95 and sc.metrics["gate"]["passed"]
    assert path.stat().st_size < 10e6
    clf = LiteRTClassifier(path)
    p = clf.classify(np.zeros((2, 96, 96, 3), np.uint8))
    assert p.shape == (2, 8) and np.allclose(p.sum(1), 1, atol=0.05)


def test_classify_without_a_model_uses_the_packaged_one(synth_dir):
    r = run_cli("celledge", "classify", str(synth_dir / "crops" / "neutrophil"), "--json")
    assert r.returncode == 0, r.stderr[-1500:]
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 3 and all(rec["label"] in CLASS_NAMES for rec in recs)


def test_an_edge_tpu_asked_for_with_a_cpu_model_and_fallback_cpu_runs_it_on_the_cpu_and_says_why():
    """--device usb --fallback cpu with the (CPU-only) packaged model: it runs on the CPU, and the warning says
    the model is not compiled for the Edge TPU, not to give the --fallback cpu the user gave."""
    from scopelite.edge.classifier import make_classifier

    said = []
    clf = make_classifier(default_model(), device="usb", fallback="cpu", warn=said.append)
    assert clf.classify(np.zeros((1, 96, 96, 3), np.uint8)).shape == (1, 8)
    assert len(said) == 1 and "not compiled for the Edge TPU" in said[0] and "_edgetpu.tflite" in said[0]
    assert "or --fallback cpu" not in said[0]


def test_a_model_folder_is_the_model_in_it(tmp_path):
    """cellcompress's --out folder (or the run folder above it) names its approved model.tflite: classify, watch and
    info take it. Before, ``classify runs/mine/int8 cells/`` read the folder as images (none) and ran the packaged
    PBC model on the cells, silently, and --model DIR was refused."""
    import shutil

    import cv2
    import numpy as np
    from click.testing import CliRunner

    from scopelite.edge.bundle import model_in
    from scopelite.edge.cli import main
    from scopelite.edge.packaged import default_model

    model = default_model()
    run = tmp_path / "run"
    (run / "int8").mkdir(parents=True)
    shutil.copy(model, run / "int8" / "model.tflite")
    sidecar = json.loads(model.with_suffix(".json").read_text())  # told apart from the packaged one by its labels
    sidecar["labels"] = sidecar["labels"][::-1]
    (run / "int8" / "model.json").write_text(json.dumps(sidecar))
    cells = tmp_path / "cells"
    cells.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(cells / "a.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    assert model_in(run) == model_in(run / "int8") == run / "int8" / "model.tflite" and model_in(cells) is None
    r = CliRunner().invoke(main, ["classify", str(cells), "--json"])
    packaged_label = json.loads([x for x in r.output.splitlines() if x.startswith("{")][0])["label"]
    packaged = sidecar["labels"][::-1]  # the same top score is named by the reversed list in the copy
    expected = sidecar["labels"][packaged.index(packaged_label)]
    assert expected != packaged_label
    for args in (["classify", str(run / "int8"), str(cells), "--json"], ["classify", str(run), str(cells), "--json"],
                 ["classify", "--model", str(run), str(cells), "--json"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        line = json.loads([x for x in r.output.splitlines() if x.startswith("{")][0])
        assert {k["label"] for k in line["top_k"]} <= set(sidecar["labels"])
        assert line["label"] == expected
    r = CliRunner().invoke(main, ["info", str(run)])
    assert r.exit_code == 0 and str(run / "int8" / "model.tflite") in r.output


def test_is_packaged_knows_a_copy_and_a_compile_of_the_packaged_model_and_nothing_else():
    """A lab's own model gets other advice on unlike-stained frames than the packaged one (ood.unlike_advice); an
    Edge TPU compile of the packaged model is still the packaged model (a review of session 34)."""
    import dataclasses

    from scopelite.edge.bundle import load_sidecar
    from scopelite.edge.packaged import default_model, is_packaged

    shipped = load_sidecar(default_model())
    assert is_packaged(shipped)
    other = dataclasses.replace(shipped, sha256="0" * 64)
    assert is_packaged(other)  # its source (the Keras model) is the packaged one's: an Edge TPU compile of it
    lab = dataclasses.replace(other, provenance=dataclasses.replace(
        shipped.provenance, source=dataclasses.replace(shipped.provenance.source, sha256="1" * 64)))
    assert not is_packaged(lab) and not is_packaged(None)
