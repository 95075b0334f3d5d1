"""Classification metrics."""
import numpy as np
import pytest

from scopelite.train.metrics import summarize, wilson_interval


def test_wilson_interval_matches_known_values():
    assert wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    lo, hi = wilson_interval(1220, 1245)  # 98.0 % on our test split
    assert lo < 0.98 < hi and 0.012 < hi - lo < 0.02
    assert wilson_interval(0, 0) == [0.0, 1.0]


def test_summarize_reports_the_interval_of_its_accuracy():
    y = np.array([0, 1, 1, 0, 1])
    probs = np.eye(2)[[0, 1, 0, 0, 1]]
    m = summarize(y, probs, ["a", "b"])
    assert m["accuracy"] == 0.8
    assert m["accuracy_ci95"] == wilson_interval(4, 5)
