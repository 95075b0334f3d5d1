"""Shared fixtures: one tiny model trained on generated data, compressed to int8, reused by many tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run a console script in a subprocess, as a user would."""
    exe = Path(sys.executable).parent / args[0]
    return subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny CNN fitted on synthetic 32x32 crops, plus its int8 bundle."""
    from scopelite.compress.pipeline import CompressConfig, compress
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import fit

    out = tmp_path_factory.mktemp("tiny") / "run"
    metrics = fit(FitConfig(out=str(out), arch="tiny", image_size=32, epochs=16, synthetic_per_class=120,
                            learning_rate=5e-3, batch_size=32), log=lambda _: None, verbose=0)
    # 12 epochs on 80 images per class scored 89-100 % across seeds and machines (a CI run fell below 90 %);
    # 16 epochs on 120 per class scored 99-100 % over 5 seeds here.
    # 96 test images: one image is 1 point, so the gate gets a wide band here (its own tests are strict)
    cmetrics = compress(CompressConfig(model=str(out / "model.keras"), out=str(out / "int8"), representative=64,
                                       max_drop_clean=6.0, max_drop_corrupted=8.0), log=lambda _: None)
    return {"dir": out, "keras": out / "model.keras", "tflite": out / "int8" / "model.tflite",
            "fit_metrics": metrics, "compress_metrics": cmetrics}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """Generated crops, fields and a short video, as `celltrain synth` writes them."""
    from scopelite.train.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, n_per_class=3, size=96, seed=1, n_fields=2, video=True)
    return out
