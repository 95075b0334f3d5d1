"""Keras -> full-integer TFLite (post-training quantisation), batch fixed at 1."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from scopelite.train._keras import tf


def representative_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices drawn stratified (equal share per class) from ``labels``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(picked))


def to_int8(model, representative: np.ndarray, io_dtype: str = "uint8") -> bytes:
    """Convert a batch-1 Keras model to a full-integer TFLite flatbuffer.

    Args:
        model: a Keras model whose input has a fixed batch of 1 (static shapes:
            no SHAPE/STRIDED_SLICE/PACK ops, as the Edge TPU needs).
        representative: uint8 images (N, H, W, 3) to calibrate activation ranges.
        io_dtype: "uint8" or "int8" for the input and output tensors.
    """
    def gen() -> Iterable[list[np.ndarray]]:
        for img in representative:
            yield [img[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8
    conv.inference_output_type = conv.inference_input_type
    return conv.convert()


def to_float32(model) -> bytes:
    """A float32 TFLite flatbuffer of the same (batch-1) model, for comparison."""
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()
