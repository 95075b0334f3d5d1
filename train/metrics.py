"""Classification metrics, pure numpy."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from scopelite.edge.differential import wilson_interval as _wilson_percent


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def summarize(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class table and expected calibration error.

    Macro averages are over the classes present in ``y_true`` (a lab's data may hold only
    some of the model's classes; a class with no images has no recall to average).
    """
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    m = confusion(y_true, y_pred, len(class_names))
    tp = np.diag(m).astype(float)
    prec = np.divide(tp, m.sum(0), out=np.zeros_like(tp), where=m.sum(0) > 0)
    rec = np.divide(tp, m.sum(1), out=np.zeros_like(tp), where=m.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    present = m.sum(1) > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "accuracy_ci95": wilson_interval(int((y_pred == y_true).sum()), int(len(y_true))),
        "macro_precision": float(prec[present].mean()) if present.any() else 0.0,
        "macro_recall": float(rec[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for n, p, r, f, s in zip(class_names, prec, rec, f1, m.sum(1))},
        "confusion": m.tolist(),
    }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a proportion: how far a test-set accuracy can be trusted.

    On 1,245 test images an accuracy of 98 % is 97.1-98.6 %: differences of a few tenths
    between runs are noise.
    """
    lo, hi = _wilson_percent(successes, n, z)  # one formula, in edge/differential.py
    return [round(lo / 100, 4), round(hi / 100, 4)]


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
