"""Test-time augmentation: classify flipped/rotated views of each crop and average the scores.

A blood cell has no "up": its class does not change under flips or rotations, so the mean of the
model's scores over such views is a cheaper ensemble than a second model. It costs one
inference per view (0.6 ms each for the shipped int8 model on a desktop core; several ms on a
Pi), which a camera at a few frames per second can afford. Pure numpy; wraps any classifier.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .bundle import VIEWS, InputSpec
from .errors import UserError

View = Callable[[np.ndarray], np.ndarray]  # (N,H,W,C) -> (N,H',W',C)

# The dihedral group of the square, the shape-keeping views first: 1, 2 and 4 views work on any
# crop; 8 need a square one.
_VIEWS: list[tuple[str, View]] = [
    ("identity", lambda x: x),
    ("flip_lr", lambda x: x[:, :, ::-1]),
    ("flip_ud", lambda x: x[:, ::-1]),
    ("rot180", lambda x: x[:, ::-1, ::-1]),
    ("rot90", lambda x: np.rot90(x, 1, axes=(1, 2))),
    ("rot270", lambda x: np.rot90(x, 3, axes=(1, 2))),
    ("transpose", lambda x: np.swapaxes(x, 1, 2)),
    ("antitranspose", lambda x: np.rot90(np.swapaxes(x, 1, 2), 2, axes=(1, 2))),
]
CHOICES = VIEWS  # the view counts a sidecar may advise (bundle.VIEWS)


def view_names(n: int) -> list[str]:
    if n not in CHOICES:
        raise UserError(f"--tta {n}: choose 1 (off), 2, 4 or 8 views")
    return [name for name, _ in _VIEWS[:n]]


def views(crops: np.ndarray, n: int) -> list[np.ndarray]:
    """The first ``n`` dihedral views of a batch of (N,H,W,C) crops, each C-contiguous."""
    view_names(n)
    if n == 8 and crops.shape[1] != crops.shape[2]:
        raise UserError(f"--tta 8 needs square crops (these are {crops.shape[2]}x{crops.shape[1]}); use 4")
    return [np.ascontiguousarray(fn(crops)) for _, fn in _VIEWS[:n]]


def average_over_views(predict: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``predict`` over the first ``n`` views of ``crops``."""
    if n == 1:
        return np.asarray(predict(crops), np.float64)
    return np.mean([np.asarray(predict(v), np.float64) for v in views(crops, n)], axis=0)


class TTAClassifier:
    """Any classifier, scored as the mean over ``n`` flipped/rotated views of each crop."""

    def __init__(self, inner, n: int):
        view_names(n)
        spec: InputSpec = inner.input_spec
        if n == 8 and spec.height != spec.width:
            raise UserError(f"--tta 8 needs a square model input (this one is {spec.width}x{spec.height}); use 4")
        self.inner, self.n = inner, n
        self.labels: Sequence[str] = inner.labels
        self.input_spec = spec

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return average_over_views(self.inner.classify, crops, self.n)

    def __getattr__(self, name):  # sidecar, path, ... of the wrapped classifier
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def as_advised(classifier, n: int | None = None):
    """``classifier`` over ``n`` views; None: as many as its sidecar advises (``Sidecar.views``: 1 unless its
    training said otherwise), as ``celledge watch`` and ``classify`` run it without ``--tta``."""
    if n is None:
        sidecar = getattr(classifier, "sidecar", None)
        n = 1 if sidecar is None else sidecar.views
    return classifier if n == 1 else TTAClassifier(classifier, n)


def views_of(classifier) -> int:
    """How many views ``classifier`` averages (1 unless it is a ``TTAClassifier``)."""
    return classifier.n if isinstance(classifier, TTAClassifier) else 1
