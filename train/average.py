"""Weight averaging: SWA over the last epochs of one run, or a "model soup" of several runs.

Averaging the weights of models that lie in one basin of the loss (epochs of one run, or runs
fine-tuned from one another) gives a flatter minimum: usually as good or better on clean images
and steadier under corruption, at no cost at inference. Pure weight arithmetic here; BatchNorm
statistics are the one thing an average cannot produce, so :func:`recalibrate_batchnorm`
re-estimates them from training images when the inputs do not share them.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from scopelite.edge.errors import UserError

MOVING = ("moving_mean", "moving_variance")


def is_moving_stat(name: str) -> bool:
    return any(m in name for m in MOVING)


def average_weights(weight_lists: Sequence[Sequence[np.ndarray]], names: Sequence[str]) -> list[np.ndarray]:
    """Element-wise mean of several models' weights (same architecture, same order).

    BatchNorm moving statistics are averaged too; callers that find them different
    across inputs should re-estimate them (see :func:`stats_differ`).
    """
    if not weight_lists:
        raise UserError("nothing to average: give at least one model")
    first = weight_lists[0]
    for i, ws in enumerate(weight_lists[1:], 1):
        if len(ws) != len(first) or any(a.shape != b.shape for a, b in zip(ws, first)):
            raise UserError(f"model {i + 1} has a different architecture from model 1; only copies of one "
                            "architecture (same --arch, --image-size, classes) can be averaged")
    if len(names) != len(first):
        raise ValueError("one name per weight expected")
    return [np.mean([ws[i] for ws in weight_lists], axis=0, dtype=np.float64).astype(first[i].dtype)
            for i in range(len(first))]


def stats_differ(weight_lists: Sequence[Sequence[np.ndarray]], names: Sequence[str]) -> bool:
    """Whether the BatchNorm moving statistics differ between the models."""
    first = weight_lists[0]
    return any(not np.array_equal(ws[i], first[i])
               for ws in weight_lists[1:] for i, n in enumerate(names) if is_moving_stat(n))


def recalibrate_batchnorm(model, batches: Iterable[np.ndarray], progress: Callable[[int], None] | None = None) -> int:
    """Re-estimate every BatchNormalization layer's moving mean/variance as the plain average over ``batches``.

    The batches are float images as the model takes them, without augmentation. Each layer's
    momentum is set so that after k batches the moving statistic is the mean of the k batch
    statistics (momentum 1 - 1/k); trainability and momentum are restored afterwards.
    Returns the number of batches used.
    """
    from ._keras import keras  # noqa: PLC0415 - keeps this module importable without TensorFlow

    bns = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    saved = [(b.trainable, b.momentum) for b in bns]
    for b in bns:
        b.trainable = True  # a frozen BN layer runs in inference mode whatever `training` says
        b.moving_mean.assign(np.zeros(b.moving_mean.shape, np.float32))
        b.moving_variance.assign(np.ones(b.moving_variance.shape, np.float32))
    k = 0
    try:
        for batch in batches:
            k += 1
            for b in bns:
                b.momentum = 1.0 - 1.0 / k
            model(np.asarray(batch, np.float32), training=True)
            if progress:
                progress(k)
    finally:
        for b, (trainable, momentum) in zip(bns, saved):
            b.trainable, b.momentum = trainable, momentum
    return k


def recalibrate_on_sample(model, images: np.ndarray, batch_size: int, batches: int = 100, seed: int = 0) -> int:
    """:func:`recalibrate_batchnorm` on up to ``batches`` batches drawn (seeded) from ``images``."""
    idx = np.random.default_rng(seed).permutation(len(images))[: batches * batch_size]
    return recalibrate_batchnorm(model, (images[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)))


def average_into(model, weight_lists: Sequence[Sequence[np.ndarray]], train_images: np.ndarray,
                 batch_size: int) -> bool:
    """Set ``model`` to the mean of ``weight_lists``; where their BatchNorm statistics differ,
    re-estimate them on a sample of ``train_images``. Returns whether they were re-estimated."""
    names = [w.name for w in model.weights]
    model.set_weights(average_weights(weight_lists, names))
    return stats_differ(weight_lists, names) and recalibrate_on_sample(model, train_images, batch_size) > 0


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # nested models
            yield from _all_layers(layer)
