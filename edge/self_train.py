"""Which unreviewed cells a lab's adapted model is sure enough of to train on (one round of self-training).

A lab labels a few cells per class; its device has seen many more. After a first few-shot fit, the adapted
model names the unreviewed cells, and those it gives a high score join the labelled ones under its class
for a second fit (``celledge export --self-train MODEL``; ``tools/few_shot.py --self-train POOL`` measures
it). Decision 17a (docs/cross-lab.md) fixed the numbers below before measuring. Pure numpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_SCORE = 0.9  # a cell joins under the adapted model's class at this score or more
CAP = 2  # ... and at most this many times the labelled cells of the lab's largest class, per class


def confident(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str], n: int,
              min_score: float = MIN_SCORE, cap: int = CAP) -> dict[str, list[int]]:
    """For each of ``classes`` (the ones the lab labelled), the rows of ``probs`` that join it: each row's best
    class among ``classes``, kept at ``min_score`` or more; at most ``cap * n`` per class, highest scores first.

    Args:
        probs: (cells, len(labels)) class probabilities of the unreviewed cells.
        labels: the model's class names, in the order of ``probs``' columns.
        classes: the classes the lab labelled; a cell whose best class is another (a platelet, say) is
            judged among these only, so it joins one only when it scores ``min_score`` there.
        n: labelled cells of the lab's largest class.
    """
    cols = [list(labels).index(c) for c in classes]
    best = np.asarray(probs, np.float64).reshape(-1, len(labels))[:, cols]
    pick, score = best.argmax(axis=1), best.max(axis=1)
    out = {}
    for k, cls in enumerate(classes):
        idx = [int(i) for i in np.flatnonzero((pick == k) & (score >= min_score))]
        out[cls] = sorted(idx, key=lambda i: -score[i])[: cap * n]
    return out
