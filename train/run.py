"""A training run on disk: its Keras bundle, its data and its saved split."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scopelite.edge.bundle import Sidecar, load_sidecar
from scopelite.edge.errors import UserError
from scopelite.edge.tta import average_over_views

from . import data as data_lib
from ._keras import keras


def load_keras_bundle(path: str | os.PathLike):
    sc = load_sidecar(path)
    if sc.format != "keras":
        raise UserError(f"{path} is a {sc.format} model; cellcompress takes the model.keras of a training run")
    if "config" not in sc.provenance:
        raise UserError(f"{path}: sidecar has no training config; re-train it with celltrain fit")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # corrupt zip, wrong format...
        raise UserError(f"cannot load {path} as a Keras model ({type(e).__name__}); is the file complete?") from None
    return sc, model


def heldout_data(sc: Sidecar, model_path: Path, data_override: str | None):
    """The run's dataset and its saved split (re-created from split.json)."""
    cfg = sc.provenance["config"]
    split_file = model_path.parent / sc.provenance.get("split_file", "split.json")
    if not split_file.is_file():
        raise UserError(f"no {split_file.name} beside {model_path}: cellcompress needs the run's saved split")
    ds = data_lib.load(data_override or cfg.get("data"), cfg["image_size"], cfg.get("synthetic_per_class", 300),
                       cfg.get("seed", 0), progress=True)
    if tuple(ds.class_names) != tuple(sc.labels):
        raise UserError(f"data classes {ds.class_names} differ from the model's labels {sc.labels}")
    return ds, data_lib.load_split(split_file, ds)


def predict(model, images: np.ndarray, batch_size: int = 64, tta: int = 1) -> np.ndarray:
    """Class probabilities of a Keras model for uint8 or float images; with ``tta`` > 1, their mean
    over that many flipped/rotated views (as ``celledge --tta``)."""
    def probs(x: np.ndarray) -> np.ndarray:
        return model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
    return probs(images) if tta == 1 else average_over_views(probs, images, tta)
