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


def is_packaged(sidecar) -> bool:
    """Whether ``sidecar`` is the packaged model's, or made as it was (by sha256: a copy counts, and so does an Edge
    TPU compile of it, whose sidecar names the packaged file, or the Keras model it came from, as its source)."""
    from .bundle import load_sidecar, model_record  # noqa: PLC0415

    try:
        shipped = model_record(load_sidecar(default_model(), check_hash=False))
    except (UserError, OSError):
        return False
    ids = {shipped["sha256"], shipped.get("source_sha256")} - {None}
    source = getattr(getattr(getattr(sidecar, "provenance", None), "source", None), "sha256", None)
    return bool(ids & {getattr(sidecar, "sha256", None), source})  # or made from it: an Edge TPU compile
