"""Telling a lab's microscope set-ups apart by background colour (fieldset) and the background-only vote
(tools/deepbionet_setups.py)."""
import importlib.util
from pathlib import Path

import numpy as np

from scopelite.edge import fieldset, stain
from scopelite.train.audit import nearest_vote

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("deepbionet_setups", ROOT / "tools" / "deepbionet_setups.py")
setups = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(setups)


def test_chromaticity_ignores_brightness():
    c = stain.chromaticity(np.array([[200, 100, 50], [100, 50, 25], [0, 0, 0]]))
    assert np.allclose(c[0], c[1]) and np.allclose(c[0].sum(), 1.0)
    assert np.all(np.isfinite(c[2]))


def test_two_groups_splits_cyan_from_yellow_and_names_the_bluer_one_first():
    rng = np.random.default_rng(0)
    cyan = stain.chromaticity(rng.normal([150, 200, 225], 4, (30, 3)))
    yellow = stain.chromaticity(rng.normal([200, 210, 150], 4, (20, 3)))
    labels = fieldset.two_groups(np.vstack([yellow, cyan]))
    assert set(labels[:20]) == {1} and set(labels[20:]) == {0}


def test_nearest_vote_takes_the_majority_of_the_nearest_and_breaks_ties_by_the_nearer():
    train = np.array([[0.0], [0.1], [0.2], [5.0], [5.1]])
    labels = ["a", "a", "b", "c", "c"]
    dist = lambda test: np.linalg.norm(np.array(test)[:, None] - train[None], axis=2)  # noqa: E731
    assert nearest_vote(dist([[0.05], [5.05]]), labels, k=3).tolist() == ["a", "c"]
    assert nearest_vote(dist([[0.19]]), labels, k=2).tolist() == ["b"]  # a 1-1 tie: b is nearer


def test_two_groups_of_nothing_to_split_is_one_group():
    assert fieldset.two_groups(np.zeros((0, 3))).tolist() == []
    assert fieldset.two_groups(np.full((4, 3), 1 / 3)).tolist() == [0, 0, 0, 0]


def test_the_tool_votes_with_the_audit_vote():
    assert setups.nearest_vote is nearest_vote  # one vote for the tool's baseline and celltrain fit's NOTE
