"""Cross-validation folds: participant-grouped and label-stratified (the only honest kind here).

Signers differ far more than repetitions of one signer do, so a model is judged on participants it
never saw: scikit-learn's StratifiedGroupKFold with participant_id as the group. The ungrouped
StratifiedKFold exists only to show how much leakage across participants flatters accuracy.
"""

from __future__ import annotations

import warnings

import numpy as np

from ablate.errors import UserError

GROUPED = "grouped"
UNGROUPED_LEAKY = "ungrouped-leaky"  # labelled so: never a basis for a decision
KINDS = (GROUPED, UNGROUPED_LEAKY)


def fold_key(kind: str, k: int, seed: int) -> str:
    """The name under which a fold assignment is stored in the cache, e.g. 'grouped-k5-s0'."""
    return f"{kind}-k{k}-s{seed}"


def make_folds(
    labels: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0, kind: str = GROUPED
) -> np.ndarray:
    """Fold id (0..k-1) per sequence. Grouped folds never split a participant."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if kind not in KINDS:
        raise UserError(f"unknown fold kind {kind!r}; known: {', '.join(KINDS)}")
    if k < 2:
        raise UserError(f"folds: k={k}, expected at least 2")
    n_groups = len(np.unique(groups))
    if kind == GROUPED and n_groups < k:
        raise UserError(f"folds: k={k} grouped folds need at least {k} participants, found {n_groups}")
    if len(labels) < k:
        raise UserError(f"folds: k={k} folds need at least {k} sequences, found {len(labels)}")
    fold = np.full(len(labels), -1, dtype=np.int8)
    x = np.zeros((len(labels), 1))
    with warnings.catch_warnings():
        # sklearn warns when a sign has fewer examples than folds; the split is still valid.
        warnings.simplefilter("ignore", UserWarning)
        if kind == GROUPED:
            splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
                x, labels, groups
            )
        else:
            splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, labels)
        for i, (_, val) in enumerate(splits):
            fold[val] = i
    if kind == GROUPED:
        check_disjoint(fold, groups)
    return fold


def check_disjoint(fold: np.ndarray, groups: np.ndarray) -> None:
    """Raise if any participant appears in two folds (the leak grouped folds exist to prevent)."""
    if (fold < 0).any():
        raise AssertionError(f"{int((fold < 0).sum())} sequence(s) have no fold")
    for g in np.unique(groups):
        seen = np.unique(fold[groups == g])
        if len(seen) > 1:
            raise AssertionError(f"participant {g} is in folds {seen.tolist()}: folds leak")
