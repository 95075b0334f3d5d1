"""Model builders for tf-keras: the networks of ``network.py`` plus weights from a file.

Every model takes raw RGB pixels (0..255) and normalises in-graph, so the int8 model on the
device is fed plain uint8 crops."""
from __future__ import annotations

from pathlib import Path

from scopelite.edge.errors import UserError

from . import network
from ._keras import keras

ARCHS = network.ARCHS


def build(arch: str, image_size: int | None, n_classes: int, weights: str = "none", dropout: float = 0.2,
          batch_size: int | None = None):
    """A flat functional model (no nested sub-models, so TFMOT can annotate it).

    Args:
        arch: "efficientnetv2b0" or "tiny".
        weights: "none", "imagenet" (EfficientNetV2B0 only, needs network or
            a Keras cache), a path to a ``.keras`` model whose layers are
            copied by name where shapes match, or a ``.tflite`` model of the
            same architecture (int8 or float; see ``from_tflite``).
        image_size: square input size; None accepts any size (progressive resizing).
        batch_size: None for training; 1 for export (static shapes for the Edge TPU).
    """
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    check_weights_arg(weights or "none", arch)
    try:
        model = network.build(keras, arch, image_size, n_classes, dropout, batch_size, imagenet=weights == "imagenet")
    except Exception as e:
        if weights != "imagenet":
            raise
        raise UserError(
            f"cannot get the ImageNet weights ({type(e).__name__}: no network?); use --weights none to "
            "train from scratch, or --weights FILE with a .keras model from an earlier run"
        ) from None
    if weights not in (None, "none", "imagenet"):
        copy_weights_from(model, weights)
    return model


SHIPPED = "shipped"  # --weights shipped: the int8 model packaged with scopelite.edge


def resolve_weights(weights: str) -> str:
    """``shipped`` -> the path of the packaged int8 model; anything else unchanged."""
    if weights == SHIPPED:
        from scopelite.edge.packaged import default_model  # noqa: PLC0415

        return str(default_model())
    return weights


def is_tflite(weights: str) -> bool:
    """Whether ``--weights`` names a TFLite model (its weights are read by ``from_tflite``)."""
    return Path(str(weights)).suffix.lower() == ".tflite"


def _no_such_file(weights) -> UserError:
    folder = Path(str(weights))
    if folder.is_dir():  # a run folder: name its model
        inside = [n for n in ("model.keras", "model.tflite") if (folder / n).is_file()]
        hint = f"give {folder / inside[0]}" if inside else "it holds no model.keras (an unfinished run?)"
        return UserError(f"--weights {weights} is a folder: {hint}")
    return UserError(f"--weights {weights}: no such file; use none, imagenet, shipped (the packaged int8 model), "
                     "a .keras model from an earlier run or a .tflite model")


def check_weights_arg(weights: str, arch: str) -> None:
    """Fail fast on a bad --weights before any data is read."""
    if not str(weights).strip():  # "$MODEL" unset: it said "--weights  is a folder" (the working folder)
        raise UserError("--weights is empty (an unset variable?): give none, shipped or a model file")
    if weights == "imagenet" and arch != "efficientnetv2b0":
        raise UserError("--weights imagenet needs --arch efficientnetv2b0")
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise _no_such_file(weights)


def copy_weights_from(model, path: str) -> int:
    """Copy weights layer by layer (matched by name and shape) from a saved model; from a .tflite
    model by execution order (see ``from_tflite``). Returns the number of layers set."""
    p = Path(path)
    if not p.is_file():
        raise _no_such_file(path)
    if is_tflite(path):
        from . import from_tflite  # noqa: PLC0415

        return from_tflite.load_into(model, p)
    try:
        src = keras.models.load_model(p, compile=False)
    except Exception as e:  # Keras raises many types for a bad file
        raise UserError(f"--weights {path}: cannot load it as a Keras model ({type(e).__name__})") from None
    by_name = {layer.name: layer for layer in src.layers}
    copied = 0
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        ws = other.get_weights()
        if [w.shape for w in ws] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(ws)
            copied += 1
    if copied == 0:
        raise UserError(f"--weights {path}: no layer matches this architecture")
    return copied


def non_finite_weights(model) -> int:
    """How many of ``model``'s weight arrays hold NaN or infinity (a training that diverged: every later answer is
    the same class, and int8 conversion quantises nothing)."""
    import numpy as np  # noqa: PLC0415

    return sum(1 for w in model.get_weights()
               if np.issubdtype(np.asarray(w).dtype, np.floating) and not np.isfinite(w).all())


def refuse_non_finite(model, path, then: str | None = None) -> None:
    """Refuse a diverged model (see ``non_finite_weights``): scored, it reads as a real one of chance accuracy.
    ``then``: what to do about it, if not to train again."""
    bad = non_finite_weights(model)
    if bad:
        raise UserError(f"{path}: {bad} of its weight arrays hold NaN or infinity (its training diverged): "
                        f"{then or 'its answers mean nothing; train again with a lower --lr'}")


def rebuild_for_export(model, arch: str, image_size: int, n_classes: int, batch_size: int | None = 1):
    """The same network at a fixed input size (and by default a fixed batch of 1), with its weights."""
    fixed = build(arch, image_size, n_classes, weights="none", batch_size=batch_size)
    fixed.set_weights(model.get_weights())
    return fixed
