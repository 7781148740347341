"""Studies made by hand, through ablate's own records (tests choose the scores and so the verdicts)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from ablate.feed import DATA_PATH
from ablate.study import records
from ablate.study.records import FoldScore, StudyMeta


def meta(space: str, arms: list[str], **given: Any) -> StudyMeta:
    """A StudyMeta with plain defaults: 5 folds x 1 seed, ablation mode, the first arm as baseline."""
    fields: dict[str, Any] = {"space": space, "question": "", "axis": "loss", "mode": "ablation", "baseline": arms[0],
                              "arms": {a: None for a in arms}, "preset": "smoke", "seeds": 1, "folds": 5,
                              "fold_seed": 0, "fold_kind": "grouped", "fingerprint": "f00", "data": {}, "recipe": {},
                              "storage": "mem", "data_path": DATA_PATH}
    return StudyMeta(**(fields | given))


def folds(scores: list[float | None], k: int = 5, epochs: int = 0) -> list[FoldScore]:
    """Fold scores at steps 0..n-1 (None: a fold that never finished), with a made-up curve."""
    curve = lambda v: {"val_acc": [v * (e + 1) / epochs for e in range(epochs)], "val_loss": [1.0] * epochs,  # noqa: E731
                       "train_loss": [1.0] * epochs} if epochs else {}
    return [FoldScore(i, i // k, i % k, v, n_train=96, n_val=24, seconds=2.5, curve=curve(v))
            for i, v in enumerate(scores) if v is not None]


def new_study(name: str, m: StudyMeta, storage: Any = None) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    records.write_meta(study, m)
    records.mark_enqueued(study)
    return study


def add(study: optuna.Study, state: TrialState, arm: str, scores: list[float | None], **kw: Any) -> None:
    k = records.read_meta(study).folds
    study.add_trial(records.made_trial(state, arm, folds(scores, k, kw.pop("epochs", 0)), **kw))
