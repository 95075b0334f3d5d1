"""Model builders. Every model takes raw RGB pixels (0..255) and normalises in-graph,
so the int8 model on the device is fed plain uint8 crops."""
from __future__ import annotations

from pathlib import Path

from scopelite.edge.errors import UserError

from ._keras import keras

ARCHS = ("efficientnetv2b0", "tiny")


def _normalise(x):
    # EfficientNetV2 without its own preprocessing expects [-1, 1]: x / 127.5 - 1.
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)


def _tiny(x, n_classes: int, dropout: float):
    """A 3-conv network for tests and quick checks (a few seconds per epoch)."""
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)


def _efficientnetv2b0(x, shape, n_classes: int, dropout: float, weights: str | None):
    base = keras.applications.EfficientNetV2B0(
        include_top=False, weights=weights, input_tensor=x, input_shape=shape, include_preprocessing=False,
        pooling="avg",
    )
    y = keras.layers.Dropout(dropout, name="top_dropout")(base.output)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(y)


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
    inp = keras.Input((image_size, image_size, 3), batch_size=batch_size, name="pixels")
    shape = (image_size, image_size, 3)
    x = _normalise(inp)
    check_weights_arg(weights or "none", arch)
    if arch == "tiny":
        out = _tiny(x, n_classes, dropout)
    else:
        try:
            out = _efficientnetv2b0(x, shape, n_classes, dropout, "imagenet" if weights == "imagenet" else None)
        except Exception as e:
            if weights != "imagenet":
                raise
            raise UserError(
                f"cannot get the ImageNet weights ({type(e).__name__}: no network?); use --weights none to "
                "train from scratch, or --weights FILE with a .keras model from an earlier run"
            ) from None
    model = keras.Model(inp, out, name=arch)
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
    return UserError(f"--weights {weights}: no such file; use none, imagenet, shipped (the packaged int8 model), "
                     "a .keras model from an earlier run or a .tflite model")


def check_weights_arg(weights: str, arch: str) -> None:
    """Fail fast on a bad --weights before any data is read."""
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


def rebuild_for_export(model, arch: str, image_size: int, n_classes: int, batch_size: int | None = 1):
    """The same network at a fixed input size (and by default a fixed batch of 1), with its weights."""
    fixed = build(arch, image_size, n_classes, weights="none", batch_size=batch_size)
    fixed.set_weights(model.get_weights())
    return fixed
