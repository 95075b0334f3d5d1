"""A training run on disk: its Keras bundle, its data and its saved split."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from scopelite.edge.bundle import FileRef, Sidecar, load_sidecar, portable, sha256_file
from scopelite.edge.errors import UserError
from scopelite.edge.tta import average_over_views

from . import data as data_lib
from . import model as model_lib
from .config import config_problem
from ._keras import keras





def load_keras_bundle(path: str | os.PathLike, diverged: str | None = None):
    """A training run's sidecar and Keras model, checked to belong together and to have finite weights
    (``diverged``: what to do about a model whose training diverged, if not the default)."""
    sc = load_sidecar(path)
    if sc.format != "keras":
        raise UserError(f"{path} is a {sc.format} model; this takes the model.keras of a training run (celltrain fit "
                        "writes it)")
    if sc.provenance.training is None or not sc.provenance.training.config:
        raise UserError(f"{path}: sidecar has no training config; re-train it with celltrain fit")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # corrupt zip, wrong format...
        raise UserError(f"cannot load {path} as a Keras model ({type(e).__name__}); is the file complete?") from None
    shape, outputs = tuple(model.input_shape[1:3]), model.output_shape[-1]
    if shape != (sc.input.height, sc.input.width) or outputs != len(sc.labels):  # a hand-edited sidecar
        raise UserError(f"{path} takes {shape[1]}x{shape[0]} px and gives {outputs} classes, but its sidecar says "
                        f"{sc.input.width}x{sc.input.height} and {len(sc.labels)}: use the sidecar celltrain fit wrote")
    model_lib.refuse_non_finite(model, path, diverged)
    return sc, model


def run_config(sc: Sidecar, model_path: Path) -> dict:
    """The run's training config: the run folder's ``config.json`` when it is this model's (it keeps
    paths as given on the training machine; the sidecar reduces absolute ones to a name), else the
    sidecar's copy."""
    try:
        local = json.loads((Path(model_path).parent / "config.json").read_text())
    except (OSError, ValueError):
        local = None
    cfg = local if isinstance(local, dict) and portable(local) == sc.provenance.training.config \
        else sc.provenance.training.config
    problem = config_problem(cfg) or ("image_size is missing" if "image_size" not in cfg else None)
    if not problem and cfg["image_size"] != sc.input.height:
        problem = f"image_size {cfg['image_size']} is not the model's input, {sc.input.height} px"
    if problem:  # a hand-edited or damaged sidecar: a KeyError or TypeError traceback in evaluate, bench, convert
        raise UserError(f"{model_path}: the training options its sidecar records are damaged ({problem}); "
                        "use the sidecar celltrain fit wrote")
    return cfg


def split_file(sc: Sidecar, model_path: Path) -> Path:
    """The run's saved split beside ``model_path``, checked against the hash its sidecar records."""
    ref = sc.provenance.training.split or FileRef("split.json")
    path = Path(model_path).parent / ref.file
    if not path.is_file():
        raise UserError(f"no {ref.file} beside {model_path}: the run's saved split is needed (copy the run folder "
                        "whole)")
    if ref.sha256 and sha256_file(path) != ref.sha256:
        raise UserError(f"{path} is not the split {Path(model_path).name} was trained with (sha256 differs); "
                        "restore the run's own split.json")
    return path


def heldout_data(sc: Sidecar, model_path: Path, data_override: str | None):
    """The run's dataset and its saved split (re-created from split.json)."""
    cfg = run_config(sc, model_path)
    split = split_file(sc, model_path)
    data = data_override or cfg.get("data")
    if data not in (None, "", data_lib.SYNTHETIC) and not Path(data).exists():
        raise UserError(f"the data {Path(model_path).name} was trained on ({data}) is not here; "
                        "pass --data PATH to the same images")
    ds = data_lib.load(data, cfg["image_size"], cfg.get("synthetic_per_class", 300),
                       cfg.get("seed", 0), progress=True)
    if tuple(ds.class_names) != tuple(sc.labels):
        raise UserError(f"data classes {ds.class_names} differ from the model's labels {sc.labels}")
    return ds, data_lib.load_split(split, ds)


def predict(model, images: np.ndarray, batch_size: int = 64, tta: int = 1) -> np.ndarray:
    """Class probabilities of a Keras model for uint8 or float images; with ``tta`` > 1, their mean
    over that many flipped/rotated views (as ``celledge --tta``)."""
    def probs(x: np.ndarray) -> np.ndarray:
        return model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
    return probs(images) if tta == 1 else average_over_views(probs, images, tta)
