"""Keras -> TFLite: full-integer int8 (PTQ or QAT), float16, dynamic range, float32. Batch fixed at 1."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from scopelite.edge._quiet import native_stderr
from scopelite.train._keras import tf


def _convert(conv) -> bytes:
    """``conv.convert()``, without the converter's C++ chatter on stderr (its errors still pass)."""
    with native_stderr():
        return conv.convert()


def representative_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices drawn stratified (equal share per class) from ``labels``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(picked))


def range_anchor(image: np.ndarray) -> np.ndarray:
    """A copy of a real ``image`` with one black and one white pixel, so the input is calibrated
    to exactly [0, 255]: scale 1, and raw uint8 pixels pass to the model unchanged (and match a
    QAT input quantiser).

    Calibration takes every tensor's range from every image it is shown, so the anchor must
    look like the data: an earlier anchor, half black and half white, drove EfficientNetV2B0's
    activations 3-4x beyond anything real crops reach, and post-training int8 of the demo model
    fell from 98.3 to 87.5 % (docs/int8.md). Two pixels move no range that matters.
    """
    img = np.array(image, np.uint8, copy=True)
    img[0, 0], img[0, -1] = 0, 255
    return img


def to_int8(model, representative: np.ndarray, io_dtype: str = "uint8") -> bytes:
    """Convert a batch-1 Keras model (plain or QAT) to a full-integer TFLite flatbuffer.

    Args:
        model: a Keras model whose input has a fixed batch of 1 (static shapes:
            no SHAPE/STRIDED_SLICE/PACK ops, as the Edge TPU needs).
        representative: uint8 images (N, H, W, 3) to calibrate activation ranges.
        io_dtype: "uint8" or "int8" for the input and output tensors.
    """
    return _convert(int8_converter(model, representative, io_dtype))


def int8_converter(model, representative: np.ndarray, io_dtype: str | None = "uint8",
                   anchor: np.ndarray | None = None):
    """The converter :func:`to_int8` runs (``io_dtype`` None: float input and output, as
    TensorFlow's QuantizationDebugger wants; ``anchor``: the first calibration image, by
    default :func:`range_anchor` of the first representative image)."""
    first = range_anchor(representative[0]) if anchor is None else anchor

    def gen() -> Iterable[list[np.ndarray]]:
        yield [first[None].astype(np.float32)]
        for img in representative:
            yield [img[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype is not None:
        conv.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8
        conv.inference_output_type = conv.inference_input_type
    return conv


def to_float32(model) -> bytes:
    """A float32 TFLite flatbuffer of the same (batch-1) model, for comparison."""
    return _convert(tf.lite.TFLiteConverter.from_keras_model(model))


def to_float16(model) -> bytes:
    """float16 weights, float32 compute: half the size, GPU delegates like it."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return _convert(conv)


def to_dynamic_range(model) -> bytes:
    """int8 weights, float activations (quantised on the fly): no calibration data needed."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return _convert(conv)
