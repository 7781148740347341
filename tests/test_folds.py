"""Folds: participants never split across grouped folds; the leaky kind does split them."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.data.folds import GROUPED, UNGROUPED_LEAKY, check_disjoint, make_folds
from ablate.errors import UserError


def _toy(n_participants: int = 10, n_signs: int = 6, reps: int = 4) -> tuple[np.ndarray, np.ndarray]:
    groups = np.repeat(np.arange(n_participants), n_signs * reps)
    labels = np.tile(np.repeat(np.arange(n_signs), reps), n_participants)
    return labels, groups


def test_grouped_folds_are_disjoint_by_participant_and_cover_everything() -> None:
    labels, groups = _toy()
    fold = make_folds(labels, groups, k=5, seed=1)
    assert set(fold.tolist()) == set(range(5))
    check_disjoint(fold, groups)
    # stratified: every fold sees every sign
    for f in range(5):
        assert set(labels[fold == f]) == set(range(6))
    np.testing.assert_array_equal(fold, make_folds(labels, groups, k=5, seed=1))
    assert not np.array_equal(fold, make_folds(labels, groups, k=5, seed=2))


def test_ungrouped_folds_leak_participants_and_the_check_catches_it() -> None:
    labels, groups = _toy()
    fold = make_folds(labels, groups, k=5, seed=0, kind=UNGROUPED_LEAKY)
    with pytest.raises(AssertionError, match="folds leak"):
        check_disjoint(fold, groups)


def test_fold_errors() -> None:
    labels, groups = _toy(n_participants=3)
    with pytest.raises(UserError, match="need at least 5 participants, found 3"):
        make_folds(labels, groups, k=5, kind=GROUPED)
    with pytest.raises(UserError, match="unknown fold kind 'random'"):
        make_folds(labels, groups, kind="random")
