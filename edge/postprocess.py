"""Pure post-processing: numpy in, plain values out. No runtime, no I/O."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Class(NamedTuple):
    label: str
    score: float


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """real = scale * (q - zero_point), subtracted in int64 so int8/uint8 never wrap."""
    return (q.astype(np.int64) - int(zero_point)).astype(np.float64) * float(scale)


def top_k(scores: np.ndarray, labels: Sequence[str], k: int = 3, threshold: float = 0.0) -> list[Class]:
    """The ``k`` best classes with score >= threshold, best first; ties keep label order."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(labels):
        raise ValueError(f"model gives {scores.shape[0]} scores for {len(labels)} labels")
    order = np.argsort(-scores, kind="stable")[: max(k, 0)]
    return [Class(labels[i], float(scores[i])) for i in order if scores[i] >= threshold]


class Tally:
    """Running count of predicted classes (a differential count)."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.counts = {name: 0 for name in self.labels}

    def add(self, label: str) -> None:
        self.counts[label] = self.counts.get(label, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        total = self.total
        return {
            "total": total,
            "counts": dict(self.counts),
            "percent": {k: (round(100.0 * v / total, 2) if total else 0.0) for k, v in self.counts.items()},
        }
