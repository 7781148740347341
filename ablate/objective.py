"""One Optuna trial: suggest an arm (and its tuned params) -> config -> every fold x seed -> mean accuracy.

Every trial uses the same fold ids and the same seeds, so the fold scores of two arms are paired.
Each fold's score is reported as an intermediate value (step = seed * K + fold) and stored, with its
curve and time, in the trial's user attributes as soon as it is known, so a pruned or failed trial
keeps the folds it finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from ablate.data.cache import Cache
from ablate.spaces import Range, Space
from ablate.train import EpochStats, train_fold

STAGE_TUNE, STAGE_COMPARE = "tune", "compare"
COMPARE_SEED_OFFSET = 500  # compare-stage trials train with fresh seeds: no selection bias


def param_key(arm: str, param: str) -> str:
    """The Optuna parameter name of an arm's tuned parameter (conditional on the arm)."""
    return f"{arm}.{param}"


def _suggest(trial: optuna.Trial, name: str, r: Range) -> Any:
    if r.choices:
        return trial.suggest_categorical(name, list(r.choices))
    if r.integer:
        return trial.suggest_int(name, int(r.low), int(r.high), log=r.log)  # type: ignore[arg-type]
    return trial.suggest_float(name, float(r.low), float(r.high), log=r.log)  # type: ignore[arg-type]


def suggest(trial: optuna.Trial, space: Space) -> tuple[str, dict[str, Any]]:
    """The arm and, outside ablation mode, its tuned parameter values."""
    arm = trial.suggest_categorical("arm", list(space.arms))
    if space.mode == "ablation":
        return arm, {}
    return arm, {p: _suggest(trial, param_key(arm, p), r) for p, r in space.arms[arm].ranges.items()}


class Objective:
    """Callable objective; `log(line, transient)` receives progress (transient: per-epoch lines)."""

    def __init__(self, space: Space, preset: str, data: Cache, seeds: int, pruning: bool,
                 log: Callable[[str, bool], None], fold_kind: str = "grouped") -> None:
        self.space, self.preset, self.data, self.fold_kind = space, preset, data, fold_kind
        self.seeds, self.pruning, self.log = seeds, pruning, log
        self.started = time.monotonic()

    def __call__(self, trial: optuna.Trial) -> float:
        arm, tuned = suggest(trial, self.space)
        stage = trial.user_attrs.get("stage", STAGE_TUNE if self.space.mode != "ablation" else "ablation")
        config = self.space.config(arm, self.preset, tuned)
        config = config.replace(fold_kind=self.fold_kind)
        if stage == STAGE_COMPARE:
            config = config.replace(seed=config.seed + COMPARE_SEED_OFFSET)
        k = config.folds
        trial.set_user_attr("arm", arm)
        trial.set_user_attr("stage", stage)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("fingerprint", self.data.fingerprint)
        scores: list[float] = []
        folds: list[dict[str, Any]] = []
        for s in range(self.seeds):
            cfg = config.replace(seed=config.seed + s)
            for fold in range(k):
                step = s * k + fold
                where = f"trial {trial.number} [{arm}] seed {s} fold {fold + 1}/{k}"
                result = train_fold(cfg, self.data, fold, on_epoch=self._epoch_logger(where, cfg.epochs),
                                    progress=False)
                score = result.last_acc  # the last epoch: picking the best epoch on val would flatter
                scores.append(score)
                folds.append({"step": step, "seed": cfg.seed, "fold": fold, "score": score,
                              "best_acc": result.best_acc, "seconds": round(result.seconds, 2),
                              "samples_per_sec": round(result.samples_per_sec, 1),
                              "n_train": result.n_train, "n_val": result.n_val,
                              "curve": {"val_acc": [round(e.val_acc, 5) for e in result.epochs],
                                        "val_loss": [round(e.val_loss, 5) for e in result.epochs],
                                        "train_loss": [round(e.train_loss, 5) for e in result.epochs]}})
                trial.report(score, step)
                trial.set_user_attr("fold_scores", scores)
                trial.set_user_attr("folds", folds)
                trial.set_user_attr("seconds", round(sum(f["seconds"] for f in folds), 2))
                self.log(f"{where}: acc {score:.4f} ({result.seconds:.0f}s) | elapsed {self._elapsed()}", False)
                if self.pruning and stage != STAGE_COMPARE and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {len(scores)} fold(s): mean {np.mean(scores):.4f}")
        self._attach_curves(trial, folds)
        return float(np.mean(scores))

    @staticmethod
    def _attach_curves(trial: optuna.Trial, folds: list[dict[str, Any]]) -> None:
        """Per-fold curves as a JSON artifact of the trial (shown by optuna-dashboard)."""
        import json
        import tempfile

        from ablate.notes import attach

        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/trial-{trial.number}-curves.json"
            with open(path, "w") as f:
                json.dump([{k: fo[k] for k in ("fold", "seed", "score", "curve")} for fo in folds], f)
            attach(trial, path, "application/json")

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60}m{s % 60:02d}s"

    def _epoch_logger(self, where: str, epochs: int) -> Callable[[EpochStats], None]:
        def show(e: EpochStats) -> None:
            self.log(f"{where} epoch {e.epoch + 1}/{epochs}: loss {e.train_loss:.3f} val acc {e.val_acc:.4f}", True)

        return show
