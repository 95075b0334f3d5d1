"""benchmarks/choose_model.py: validation-only choice, test beside it, and prediction ensembles."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "choose_model.py"


def test_choose_model_scores_candidates_and_ensembles(tiny_run, tmp_path):
    k = str(tiny_run["keras"])
    out = tmp_path / "sel.json"
    p = subprocess.run([sys.executable, str(SCRIPT), f"a={k}", f"b={k}", "--tta", "1", "--ensembles", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
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
    assert "highest val_score" in p.stdout and "1 ensembles" in p.stdout
    # one candidate cannot make an ensemble: a usage error, not a traceback
    p = subprocess.run([sys.executable, str(SCRIPT), f"a={k}", "--tta", "1", "--ensembles", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--ensembles needs" in p.stderr
