"""A study's mode: what to queue, what to sample, which trial stands for an arm, when it is done.

- ablation: every arm once, on the same folds and seeds, queued by the process that creates the
  study (and by a resume, for arms added to the space file since).
- tune: Optuna's TPE samples the arm and its ranges within a trial budget; an arm added later gets
  one queued trial of its own on top of the budget, so it is in the comparison.
- both: each arm tuned with a small budget (queued, TPE samples the ranges), then each arm's best
  parameters evaluated again with fresh seeds (the compare stage), so that the comparison is not
  biased by the selection.
"""

from __future__ import annotations

from typing import Any

import optuna

from ablate.resolve import STAGE_ABLATION, STAGE_COMPARE, STAGE_TUNE
from ablate.spaces import Range, Space
from ablate.study import queue
from ablate.study.records import StudyMeta, TrialRecord, param_key

_ORDER = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}


def _suggest(trial: optuna.Trial, name: str, r: Range) -> Any:
    if r.choices:
        return trial.suggest_categorical(name, list(r.choices))
    if r.integer:
        return trial.suggest_int(name, int(r.low), int(r.high), log=r.log)  # type: ignore[arg-type]
    return trial.suggest_float(name, float(r.low), float(r.high), log=r.log)  # type: ignore[arg-type]


def suggest_ranges(trial: optuna.Trial, space: Space, arm: str) -> dict[str, Any]:
    return {p: _suggest(trial, param_key(arm, p), r) for p, r in space.arms[arm].ranges.items()}


def _holding(recs: list[TrialRecord], arm: str, stage: str) -> list[TrialRecord]:
    return [r for r in recs if r.arm == arm and r.stage == stage and r.holds_place]


class Mode:
    """The ablation mode; the others override what differs."""

    name = "ablation"
    stage = STAGE_ABLATION  # the stage of a queued trial

    def suggest(self, trial: optuna.Trial, space: Space, meta: StudyMeta, arm: str | None) -> tuple[str, dict[str, Any]]:
        """The trial's arm (queued with it, or sampled) and its tuned values."""
        if arm is None:
            raise RuntimeError(f"trial {trial.number} was not queued with an arm")
        return arm, {}

    def queue_missing(self, study: optuna.Study, space: Space, recs: list[TrialRecord], meta: StudyMeta) -> int:
        """Queue every arm's trials that no trial holds a place for; returns how many."""
        added = 0
        for arm in space.arms:
            want = self._wanted(meta) - len(_holding(recs, arm, self.stage))
            for _ in range(max(0, want)):
                queue.enqueue(study, arm, self.stage)
                added += 1
        return added

    def _wanted(self, meta: StudyMeta) -> int:
        """Queued trials per arm in this mode's first stage."""
        return 1

    def may_sample(self, recs: list[TrialRecord], meta: StudyMeta, n_trials: int | None) -> bool:
        """Whether a worker with nothing queued may ask the sampler for a new trial."""
        return False

    def next_stage(self, study: optuna.Study, space: Space, recs: list[TrialRecord]) -> int:
        """Queue a following stage's trials where one is due; returns how many."""
        return 0

    def is_duplicate(self, rec: TrialRecord, recs: list[TrialRecord], meta: StudyMeta) -> bool:
        """A queued trial that two processes queued at once: an earlier one already holds its place."""
        if rec.arm is None:
            return False
        wanted = 1 if rec.stage == STAGE_COMPARE else self._wanted(meta)
        earlier = [r for r in _holding(recs, rec.arm, rec.stage) if r.number < rec.number]
        return len(earlier) >= wanted

    def _open(self, recs: list[TrialRecord]) -> str | None:
        n = sum(not r.finished for r in recs)
        return f"{n} trial(s) still waiting or running" if n else None

    def representative(self, recs: list[TrialRecord]) -> TrialRecord | None:
        """The trial whose folds stand for the arm: complete, else pruned, else failed with most folds."""
        usable = [r for r in recs if r.state in _ORDER and r.folds and not r.unfinished]
        if not usable:
            return None
        return min(usable, key=lambda r: (_ORDER[r.state], -(r.value or 0.0), -len(r.folds), r.number))

    def unfinished(self, recs: list[TrialRecord], space: Space, meta: StudyMeta) -> str | None:
        """Why the study cannot be used for a decision yet (finalize), or None."""
        if self._open(recs):
            return self._open(recs)
        done = {r.arm for r in recs if r.finished and r.holds_place and r.stage == self.stage}
        missing = [a for a in space.arms if a not in done]
        if missing:
            return f"no finished trial for arm(s) {', '.join(missing)}"
        return None

    def warnings(self) -> list[str]:
        return []


class Tune(Mode):
    name = "tune"
    stage = STAGE_TUNE

    def suggest(self, trial: optuna.Trial, space: Space, meta: StudyMeta, arm: str | None) -> tuple[str, dict[str, Any]]:
        if arm is None:  # sampled: over the arms the study has now (see StudyMeta.arm_param)
            arm = trial.suggest_categorical(meta.arm_param, list(meta.arms))  # stored order: never reshuffled
        return arm, suggest_ranges(trial, space, arm)

    def queue_missing(self, study: optuna.Study, space: Space, recs: list[TrialRecord], meta: StudyMeta) -> int:
        """The sampler chooses the arms; only an arm added after the study began gets a queued trial."""
        added = 0
        for arm in meta.added_arms:
            if not any(r.arm == arm and r.added and r.holds_place for r in recs):
                queue.enqueue(study, arm, STAGE_TUNE, added=True)
                added += 1
        return added

    def may_sample(self, recs: list[TrialRecord], meta: StudyMeta, n_trials: int | None) -> bool:
        budget = (n_trials or meta.n_trials) + len(meta.added_arms)
        return sum(r.holds_place for r in recs) < budget

    def is_duplicate(self, rec: TrialRecord, recs: list[TrialRecord], meta: StudyMeta) -> bool:
        """Sampled trials count against the budget; only the queued trial of an added arm can be doubled."""
        return rec.added and any(r.added and r.arm == rec.arm and r.holds_place and r.number < rec.number for r in recs)

    def representative(self, recs: list[TrialRecord]) -> TrialRecord | None:
        done = [r for r in recs if r.state == "COMPLETE" and r.folds]
        return max(done, key=lambda r: (r.value or 0.0, -r.number)) if done else super().representative(recs)

    def unfinished(self, recs: list[TrialRecord], space: Space, meta: StudyMeta) -> str | None:
        if self._open(recs):
            return self._open(recs)
        done = sum(r.finished and r.holds_place for r in recs)
        budget = meta.n_trials + len(meta.added_arms)
        if done < budget:
            return f"{done} of its {budget} tuning trials finished"
        return None

    def warnings(self) -> list[str]:
        return ["tune mode: each arm's figure is its best trial out of several, which flatters it; "
                "use mode 'both' for a comparison with fresh seeds"]


class Both(Mode):
    name = "both"
    stage = STAGE_TUNE

    def _wanted(self, meta: StudyMeta) -> int:
        return meta.n_trials

    def suggest(self, trial: optuna.Trial, space: Space, meta: StudyMeta, arm: str | None) -> tuple[str, dict[str, Any]]:
        arm, _ = super().suggest(trial, space, meta, arm)
        return arm, suggest_ranges(trial, space, arm)  # the compare stage's values are fixed with it

    def next_stage(self, study: optuna.Study, space: Space, recs: list[TrialRecord]) -> int:
        """Each arm whose tuning trials have all finished: its best parameters, again, fresh seeds."""
        added = 0
        for arm in space.arms:
            mine = [r for r in recs if r.arm == arm]
            if _holding(mine, arm, STAGE_COMPARE) or any(not r.finished for r in mine):
                continue
            done = [r for r in mine if r.stage == STAGE_TUNE and r.state == "COMPLETE"]
            if done:
                best = max(done, key=lambda r: (r.value or 0.0, -r.number))
                queue.enqueue(study, arm, STAGE_COMPARE, {param_key(arm, k): v for k, v in best.params.items()},
                              tuned_in=best.number)
                added += 1
        return added

    def representative(self, recs: list[TrialRecord]) -> TrialRecord | None:
        return super().representative([r for r in recs if r.stage == STAGE_COMPARE])

    def unfinished(self, recs: list[TrialRecord], space: Space, meta: StudyMeta) -> str | None:
        if self._open(recs):
            return self._open(recs)
        done = {r.arm for r in recs if r.finished and r.holds_place and r.stage == STAGE_COMPARE}
        missing = [a for a in space.arms if a not in done]
        return f"no finished trial in the compare stage for arm(s) {', '.join(missing)}" if missing else None


MODES: dict[str, Mode] = {m.name: m for m in (Mode(), Tune(), Both())}


def mode_of(name: str) -> Mode:
    return MODES[name]
