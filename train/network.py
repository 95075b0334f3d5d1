"""The networks, written once for any Keras: tf-keras (``celltrain fit``) or Keras 3 (``--backend keras3``).

Every function takes the ``keras`` module to build with, and this module imports neither,
so the Keras 3 trainer can use it on a GPU machine that has no TensorFlow. Both Keras
versions name the layers and weights alike, so weights move between them by name.
Every model takes raw RGB pixels (0..255) and normalises in-graph, so the int8 model on
the device is fed plain uint8 crops.
"""
from __future__ import annotations

ARCHS = ("efficientnetv2b0", "tiny")


def _normalise(keras, x):
    # EfficientNetV2 without its own preprocessing expects [-1, 1]: x / 127.5 - 1.
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)


def _tiny(keras, x, n_classes: int, dropout: float):
    """A 3-conv network for tests and quick checks (a few seconds per epoch)."""
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)


def _efficientnetv2b0(keras, x, shape, n_classes: int, dropout: float, weights: str | None):
    base = keras.applications.EfficientNetV2B0(
        include_top=False, weights=weights, input_tensor=x, input_shape=shape, include_preprocessing=False,
        pooling="avg",
    )
    y = keras.layers.Dropout(dropout, name="top_dropout")(base.output)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(y)


def build(keras, arch: str, image_size: int | None, n_classes: int, dropout: float = 0.2,
          batch_size: int | None = None, imagenet: bool = False):
    """A flat functional model (no nested sub-models, so TFMOT can annotate it).

    Args:
        keras: the Keras module to build with (tf_keras or Keras 3).
        arch: one of ``ARCHS``.
        image_size: square input size; None accepts any size (progressive resizing).
        batch_size: None for training; 1 for export (static shapes for the Edge TPU).
        imagenet: start EfficientNetV2B0 from Keras' ImageNet weights (needs network or a cache).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    inp = keras.Input((image_size, image_size, 3), batch_size=batch_size, name="pixels")
    x = _normalise(keras, inp)
    if arch == "tiny":
        out = _tiny(keras, x, n_classes, dropout)
    else:
        out = _efficientnetv2b0(keras, x, (image_size, image_size, 3), n_classes, dropout,
                                "imagenet" if imagenet else None)
    return keras.Model(inp, out, name=arch)


def weight_name(w) -> str:
    """'block1a_project_conv/kernel' in Keras 3 and tf-keras alike (tf-keras says 'depthwise_kernel:0')."""
    name = getattr(w, "path", None) or w.name
    return name.split(":")[0].replace("/depthwise_kernel", "/kernel")
