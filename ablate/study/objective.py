"""One Optuna trial: its arm (and tuned values) -> config -> every repeat x seed x fold -> mean accuracy.

Every trial uses the same partitions (one per repeat), fold ids and seeds, so the fold scores of two
arms are paired. Each fold's score is reported as an intermediate value (step = (repeat * seeds +
seed) * K + fold) and stored, with its curve, time and (outside the tune stage) its validation
predictions, in the trial's record as soon as it is known, so a pruned or failed trial keeps the
folds it finished.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from ablate import checkpoints
from ablate.data.cache import Cache
from ablate.resolve import STAGE_COMPARE, STAGE_TUNE, resolve
from ablate.spaces import Space
from ablate.study import predictions, records
from ablate.study.modes import Mode
from ablate.study.records import FoldScore, StudyMeta
from ablate.train import EpochStats, FoldResult, train_fold


class Objective:
    """Callable objective; `log(line, transient)` receives progress (transient: per-epoch lines)."""

    def __init__(self, space: Space, meta: StudyMeta, mode: Mode, data: Cache, pruning: bool,
                 log: Callable[[str, bool], None], device: str | None = None, sharing: int = 1) -> None:
        """`device`: this worker's place (ablate.device.place), used where the recipe says auto;
        `sharing`: the study workers on this machine."""
        self.space, self.meta, self.mode, self.data = space, meta, mode, data
        self.pruning, self.log, self.sharing = pruning, log, sharing
        self.settings: dict[str, Any] = {"fold_kind": meta.fold_kind} if meta.fold_kind != "grouped" else {}
        if device and resolve(space.base, meta.preset).config.device == "auto":
            self.settings["device"] = device
        self.started = time.monotonic()

    def __call__(self, trial: optuna.Trial) -> float:
        arm, tuned = self.mode.suggest(trial, self.space, self.meta, records.enqueued_arm(trial))
        stage = records.trial_stage(trial, self.mode.stage)
        settings = self.settings
        first = resolve(self.space.base, self.meta.preset, self.space.arms[arm], tuned, stage, settings=settings)
        records.start(trial, arm, stage, first.config.to_dict(), first.sources, self.data.fingerprint)
        k, n_seeds = first.config.folds, self.meta.seeds
        folds: list[FoldScore] = []
        for r in range(self.meta.repeats):
            for s in range(n_seeds):
                cfg = resolve(self.space.base, self.meta.preset, self.space.arms[arm], tuned, stage, repeat=r,
                              seed=s, settings=settings).config
                for fold in range(k):
                    step = (r * n_seeds + s) * k + fold
                    folds.append(self._fold(trial, arm, cfg, r, s, fold, step))
                    records.add_folds(trial, folds)
                    checkpoints.reached("trial:fold-stored")
                    if self.pruning and stage != STAGE_COMPARE and trial.should_prune():
                        mean = np.mean([f.score for f in folds])
                        raise optuna.TrialPruned(f"pruned after {len(folds)} fold(s): mean {mean:.4f}")
        _attach_curves(trial, folds)
        return float(np.mean([f.score for f in folds]))

    def _fold(self, trial: optuna.Trial, arm: str, cfg: Any, repeat: int, seed: int, fold: int,
              step: int) -> FoldScore:
        """Train one fold, report it to Optuna (for the pruner) and log it."""
        k = cfg.folds
        rep = f" repeat {repeat}" if self.meta.repeats > 1 else ""
        where = f"trial {trial.number} [{arm}]{rep} seed {seed} fold {fold + 1}/{k}"
        stage = records.trial_stage(trial, self.mode.stage)
        result = train_fold(cfg, self.data, fold, on_epoch=self._epoch_logger(where, cfg.epochs), progress=False,
                            sharing=self.sharing, keep_predictions=stage != STAGE_TUNE)
        # for the participant panel: the trials that stand for an arm (tune-stage trials are many, and
        # a tune study's comparison is flattered anyway)
        if result.val_probs is not None and result.val_indices is not None and stage != STAGE_TUNE:
            labels = self.data.labels[result.val_indices]
            predictions.add_predictions(trial, step, result.val_indices, result.val_probs.argmax(1),
                                        result.val_probs[np.arange(labels.size), labels])
        trial.report(result.last_acc, step)  # the last epoch: the best one on val would flatter
        self.log(f"{where}: acc {result.last_acc:.4f} ({result.seconds:.0f}s) | elapsed {self._elapsed()}", False)
        return _fold_score(step, cfg.seed, fold, repeat, result)

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60}m{s % 60:02d}s"

    def _epoch_logger(self, where: str, epochs: int) -> Callable[[EpochStats], None]:
        def show(e: EpochStats) -> None:
            self.log(f"{where} epoch {e.epoch + 1}/{epochs}: loss {e.train_loss:.3f} val acc {e.val_acc:.4f}", True)

        return show


def _fold_score(step: int, seed: int, fold: int, repeat: int, r: FoldResult) -> FoldScore:
    return FoldScore(step, seed, fold, r.last_acc, r.best_acc, round(r.seconds, 2), round(r.samples_per_sec, 1),
                     r.n_train, r.n_val, {"val_acc": [round(e.val_acc, 5) for e in r.epochs],
                                          "val_loss": [round(e.val_loss, 5) for e in r.epochs],
                                          "train_loss": [round(e.train_loss, 5) for e in r.epochs]},
                     r.device, r.gpu, r.amp, repeat, r.graphs)


def _attach_curves(trial: optuna.Trial, folds: list[FoldScore]) -> None:
    """Per-fold curves as a JSON artifact of the trial (shown by optuna-dashboard)."""
    from ablate.study.dashboard import attach

    rows: list[dict[str, Any]] = [{"fold": f.fold, "seed": f.seed, "score": f.score, "curve": f.curve} for f in folds]
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/trial-{trial.number}-curves.json"
        with open(path, "w") as fh:
            json.dump(rows, fh)
        attach(trial, path, "application/json")
