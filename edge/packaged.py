"""The int8 model shipped inside the package (trained on real PBC cells), for use with no training."""
from __future__ import annotations

from pathlib import Path

from .errors import UserError

PACKAGED_NAME = "bloodcell_int8.tflite"


def default_model() -> Path:
    """Path of the packaged int8 bundle; UserError if this install has none."""
    path = Path(__file__).parent / "models" / PACKAGED_NAME
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise UserError(f"this install ships no default model ({path} missing); pass --model MODEL.tflite")
    return path
