"""benchmarks/medmnistc_crosscheck.py end to end, with a stand-in medmnistc package (the real one pulls in torch)."""
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "medmnistc_crosscheck.py"

FAKE_REGISTRY = textwrap.dedent('''\
    import numpy as np

    class Darken:  # the real classes take a PIL image and a severity index 0..4 and return uint8 RGB
        def __init__(self, factor):
            self.factor = factor
        def apply(self, img, severity=-1):
            assert img.size == (224, 224), "the protocol runs at 224 px"
            return (np.asarray(img, np.float32) * (1 - self.factor * (severity + 1))).astype(np.uint8)

    CORRUPTIONS_DS = {"bloodmnist": {"pixelate": Darken(0.01), "brightness_down": Darken(0.15),
                                     "stain_deposit": Darken(0.19)}}
''')


def _load():
    spec = importlib.util.spec_from_file_location("crosscheck", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(per_c: dict) -> dict:
    return {"images": 40, "seed": 0, "corruptions": list(next(iter(per_c.values()))),
            "models": {m: {"mean_corrupted": sum(v.values()) / len(v), "per_corruption": v} for m, v in per_c.items()}}


def test_compare_separates_shared_from_unmatched_corruptions(tmp_path):
    cc = _load()
    ours = _bench({"a": {"pixelate": 0.9, "jpeg": 0.8}, "b": {"pixelate": 0.8, "jpeg": 0.7}})
    # theirs: same order on the shared corruptions, but an unmatched one flips the overall mean
    theirs = _bench({"a": {"pixelate": 0.95, "jpeg_compression": 0.9, "stain_deposit": 0.1},
                     "b": {"pixelate": 0.9, "jpeg_compression": 0.85, "stain_deposit": 0.9}})
    r = cc.compare(ours, theirs, tmp_path, "test")
    assert r["rank_agreement_shared"]["same_ranking"] and r["rank_agreement_shared"]["kendall_tau"] == 1.0
    assert r["rank_agreement"]["kendall_tau"] == -1.0
    assert set(r["shared_corruptions"]) == {"pixelate ~ pixelate", "jpeg_compression ~ jpeg"}
    assert r["unmatched"]["stain_deposit"]["b"] == 0.9
    assert "measured_on" in r and "stain_deposit" in (tmp_path / "crosscheck.md").read_text()
    with pytest.raises(SystemExit):
        cc.compare(ours, {**theirs, "images": 41}, tmp_path, "test")
    # one model in both benches: nothing to rank, no crash, no crosscheck files
    one = tmp_path / "one"
    one.mkdir()
    assert cc.compare(_bench({"a": ours["models"]["a"]["per_corruption"]}), theirs, one, "test") == {}
    assert not (one / "crosscheck.json").exists()


def test_run_corrupts_in_another_python_and_ranks(tiny_run, tmp_path):
    fake = tmp_path / "fake" / "medmnistc" / "corruptions"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "registry.py").write_text(FAKE_REGISTRY)
    other_python = tmp_path / "mc-python"
    other_python.write_text(f'#!/bin/sh\nPYTHONPATH="{fake.parent.parent}" exec "{sys.executable}" "$@"\n')
    other_python.chmod(0o755)
    models = [str(tiny_run["keras"]), str(tiny_run["tflite"])]
    ours = tmp_path / "ours"
    r = run_cli("cellcompress", "bench", *models, "--out", str(ours), "--limit", "24")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "mc"
    import subprocess

    p = subprocess.run([sys.executable, str(SCRIPT), "run", *models, "--ours", str(ours / "bench.json"),
                        "--medmnistc-python", str(other_python), "--out", str(out), "--limit", "24"],
                       capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-3000:]
    theirs = json.loads((out / "bench.json").read_text())
    assert theirs["corruptions"] == ["pixelate", "brightness_down", "stain_deposit"]
    assert len(theirs["accuracy"]["model.keras"]) == 1 + 3 * 5
    res = json.loads((out / "crosscheck.json").read_text())
    assert res["models"] == ["model.keras", Path(tiny_run["tflite"]).name]
    assert set(res["shared_corruptions"]) == {"pixelate ~ pixelate", "brightness_down ~ brightness_down"}
    # harsher darkening never helps: severity 5 of the fake brightness_down is 75 % darker
    acc = theirs["accuracy"]["model.keras"]
    assert acc["brightness_down/5"] <= acc["brightness_down/1"]


def test_native_run_corrupts_whole_fields_at_bloodmnist_scale(tiny_run, tmp_path):
    """--fields: whole fields resampled to BloodMNIST's red-cell size, corrupted as they are, classified by field mode."""
    import subprocess

    from conftest import invoke_cli
    from test_native_bench import write_fields

    fake = tmp_path / "fake" / "medmnistc" / "corruptions"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "registry.py").write_text(FAKE_REGISTRY.replace(
        'assert img.size == (224, 224), "the protocol runs at 224 px"',
        'assert img.size[0] > 300, "a field goes to the BloodMNIST scale first (red cells 42.4 px, here 26)"'))
    other_python = tmp_path / "mc-python"
    other_python.write_text(f'#!/bin/sh\nPYTHONPATH="{fake.parent.parent}" exec "{sys.executable}" "$@"\n')
    other_python.chmod(0o755)
    fields = write_fields(tmp_path / "fields", side=240)  # red cells ~26 px: enlarged ~1.7x for MedMNIST-C
    ours = tmp_path / "ours"
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--protocol", "native", "--fields", str(fields),
                   "--out", str(ours))
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "mc"
    p = subprocess.run([sys.executable, str(SCRIPT), "run", str(tiny_run["tflite"]), "--fields", str(fields),
                        "--ours", str(ours / "native.json"), "--medmnistc-python", str(other_python),
                        "--out", str(out)], capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-3000:]
    theirs = json.loads((out / "bench.json").read_text())
    assert theirs["unit"] == "fields" and theirs["images"] == 6
    assert theirs["corruptions"] == ["pixelate", "brightness_down", "stain_deposit"]
    acc = theirs["accuracy"][Path(tiny_run["tflite"]).name]
    assert len(acc) == 1 + 3 * 5 and all(0 <= v <= 1 for v in acc.values())
