"""A training run's folder and its model: the one place that says "a run folder or its model.keras".

Imports no TensorFlow, so the CLIs can resolve a path before they load anything heavy.
"""
from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE = "model.keras"


def model_file(path: str | os.PathLike) -> Path:
    """A run folder or its model.keras -> the model.keras."""
    p = Path(path)
    return p / MODEL_FILE if p.is_dir() else p
