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
