"""Typed study and trial records: the only code that reads or writes Optuna attributes.

A study's metadata (`StudyMeta`) is one user attribute; a trial's record (`TrialRecord`, with its
`FoldScore`s) is a handful of user attributes whose names live here and nowhere else. Everything
else (the report, finalize, the dashboard note) takes these objects. Optuna's private fields
(`_storage`, `_trial_id`) are used only here and in ablate.study.queue, which changes trial states.

Studies written before these records existed (flat attributes, arms as enqueued parameters) are
read as well.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ablate.report.stats import DEFAULT_ROPE
from ablate.study.storage import mask_url

META = "ablate"  # the study attribute holding StudyMeta
UNFINISHED = ("stale", "interrupted", "requeued", "duplicate")  # flags of a trial that is no result
LEAKY_SUFFIX = "-leaky"  # `ablate run SPACE --leaky-folds` runs the study SPACE-PRESET-leaky
ENQUEUED = "enqueued"  # set once the creating process has enqueued the arms
SUMMARY = "summary"  # the verdict rows, for a glance in optuna-dashboard's attribute view
_LEGACY_STUDY_KEYS = ("space", "question", "axis", "mode", "baseline", "preset", "seeds", "folds", "fold_seed",
                      "fingerprint", "fold_kind", "data", "recipe", "n_trials", "space_file", "storage")


def study_name(space: str, recipe: str, preset: str, leaky: bool = False) -> str:
    """A study's default name: SPACE-PRESET on the baseline recipe, SPACE-RECIPE-PRESET on another."""
    return f"{space}-{'' if recipe == 'baseline' else recipe + '-'}{preset}" + (LEAKY_SUFFIX if leaky else "")


@dataclass
class StudyMeta:
    """What a study asks and how: written by the process that creates it, checked on every resume."""

    space: str
    question: str
    axis: str
    mode: str
    baseline: str
    arms: dict[str, dict[str, Any] | None]  # label -> the arm's own spec (None: a study older than specs)
    preset: str
    seeds: int
    folds: int
    fold_seed: int
    fold_kind: str
    fingerprint: str
    data: dict[str, Any]
    recipe: dict[str, Any]  # the baseline arm's resolved config
    base_written: dict[str, Any] = field(default_factory=dict)  # base.yaml's recipe and preset as written
    n_trials: int = 20
    added_arms: list[str] = field(default_factory=list)  # tune mode: arms added later, one queued trial each
    arm_param: str = "arm"  # tune mode: the Optuna parameter that samples the arm
    space_file: str = ""
    storage: str = ""  # masked: never a password
    data_path: str = ""  # the trainer's input path (feed.DATA_PATH); "" = per-sequence, before batches on the device
    repeats: int = 1  # re-partitions of the data (fold seed fold_seed + repeat); 1 in studies before repeats
    rope: list[float] = field(default_factory=lambda: list(DEFAULT_ROPE))  # the space file's, for the verdicts
    recipe_name: str = "baseline"  # which of base.yaml's recipes the arms change (studies before recipes: baseline)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class FoldScore:
    """One fold (of one seed) of a trial: the paired unit every comparison is built from."""

    step: int  # (repeat * seeds + seed index) * K + fold
    seed: int
    fold: int
    score: float  # last-epoch validation accuracy
    best_acc: float = 0.0
    seconds: float = 0.0
    samples_per_sec: float = 0.0
    n_train: int = 0
    n_val: int = 0
    curve: dict[str, list[float]] = field(default_factory=dict)
    device: str = ""  # where it trained ("cpu", "cuda:1"), the GPU's name, and the precision it ran at
    gpu: str = ""
    amp: str = ""
    repeat: int = 0
    graphs: str = ""  # on CUDA: whether its steps or its model ran in CUDA graphs, or why capturing failed (Step.graphs)


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    arm: str | None
    stage: str
    params: dict[str, Any]  # the tuned values, by parameter name
    config: dict[str, Any]
    sources: dict[str, str]  # config key -> where its value came from
    fingerprint: str | None
    folds: list[FoldScore]
    fail_reason: str | None  # set: a final failure of the configuration
    unfinished: bool  # stale, interrupted, retried or a duplicate: not a result (a copy was queued again)
    retries: int  # how often this configuration was retried after a device failure
    tuned_in: int | None
    worker: dict[str, Any] | None
    completed: datetime | None
    added: bool = False  # queued for an arm added to a tune study after it began
    started: datetime | None = None
    speed: dict[str, Any] | None = None  # study.speed.Speed of its model (model, features and recipe axes)

    @property
    def holds_place(self) -> bool:
        """Whether the trial holds its arm's place (anything but an unfinished-and-requeued one)."""
        return self.state != "FAIL" or (self.fail_reason is not None and not self.unfinished)

    @property
    def finished(self) -> bool:
        return self.state in ("COMPLETE", "PRUNED", "FAIL")


def param_key(arm: str, param: str) -> str:
    """The Optuna parameter name of an arm's tuned parameter (conditional on the arm)."""
    return f"{arm}.{param}"


def _fixed(t: FrozenTrial) -> dict[str, Any]:
    return t.system_attrs.get("fixed_params") or {}


def trial_record(t: FrozenTrial, arm_params: tuple[str, ...] = ("arm",)) -> TrialRecord:
    ua = t.user_attrs
    fixed = _fixed(t)
    arm = ua.get("arm") or next((t.params.get(p) or fixed.get(p) for p in arm_params
                                 if t.params.get(p) or fixed.get(p)), None)
    prefix = param_key(str(arm), "")
    params = {k[len(prefix):]: v for k, v in {**fixed, **t.params}.items() if k.startswith(prefix)}
    folds = [FoldScore(**{k: f[k] for k in f if k in _FOLD_FIELDS}) for f in ua.get("folds", [])]
    unfinished = any(ua.get(flag) for flag in UNFINISHED)
    return TrialRecord(t.number, t.state.name, t.value, arm, ua.get("stage", "ablation"), params,
                       ua.get("config", {}), ua.get("sources", {}), ua.get("fingerprint"), folds,
                       ua.get("fail_reason"), unfinished, int(ua.get("retries", 0)), ua.get("tuned_in"),
                       ua.get("worker"), t.datetime_complete, bool(ua.get("added")), t.datetime_start,
                       ua.get("speed"))


_FOLD_FIELDS = {f.name for f in dataclasses.fields(FoldScore)}


def read_meta(study: optuna.Study) -> StudyMeta:
    ua = study.user_attrs
    if META in ua:
        meta = StudyMeta(**{k: v for k, v in ua[META].items() if k in _META_FIELDS})
    else:  # a study from before these records: flat attributes
        legacy = {k: ua[k] for k in _LEGACY_STUDY_KEYS if k in ua}
        meta = StudyMeta(**{"space": study.study_name, "question": "", "axis": "", "mode": "ablation", "baseline": "",
                            "preset": "", "seeds": 1, "folds": 5, "fold_seed": 0, "fold_kind": "grouped",
                            "fingerprint": "", "data": {}, "recipe": {}, **legacy,
                            "arms": {a: None for a in ua.get("arms", [])}})
    meta.storage = mask_url(str(meta.storage))  # older versions stored a ?password= in clear
    return meta


_META_FIELDS = {f.name for f in dataclasses.fields(StudyMeta)}


def write_meta(study: optuna.Study, meta: StudyMeta) -> None:
    study.set_user_attr(META, meta.to_json())
    if "storage" in study.user_attrs:  # an older version's flat copy, maybe with a password: overwritten
        study.set_user_attr("storage", meta.storage)


def has_meta(study: optuna.Study) -> bool:
    return META in study.user_attrs or "space" in study.user_attrs


def is_enqueued(study: optuna.Study) -> bool:
    return bool(study.user_attrs.get(ENQUEUED))


def mark_enqueued(study: optuna.Study) -> None:
    study.set_user_attr(ENQUEUED, True)


def write_summary(study: optuna.Study, rows: list[dict[str, Any]]) -> None:
    study.set_user_attr(SUMMARY, json.loads(json.dumps(rows)))


def trial_records(study: optuna.Study, meta: StudyMeta | None = None) -> list[TrialRecord]:
    meta = meta or read_meta(study)
    names = tuple(dict.fromkeys(("arm", meta.arm_param)))
    params = tuple(p for p in _arm_params(study) if p not in names)
    recs = [trial_record(t, names + params) for t in study.get_trials(deepcopy=False)]
    timed = study.user_attrs
    for r in recs:
        r.speed = r.speed or timed.get(f"{SPEED}{r.number}")
    return recs


def _arm_params(study: optuna.Study) -> list[str]:
    """Every parameter that ever sampled an arm (a tune study's arm set may have grown)."""
    return sorted({k for t in study.get_trials(deepcopy=False) for k in t.params if k.startswith("arm@")})


def study_metas(storage: BaseStorage) -> list[tuple[str, StudyMeta]]:
    """(name, meta) of every ablate study in a storage, by name."""
    out = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if META in s.user_attrs or "space" in s.user_attrs:
            out.append((s.study_name, read_meta(optuna.load_study(study_name=s.study_name, storage=storage))))
    return sorted(out, key=lambda x: x[0])


def load_sibling(study: optuna.Study, name: str) -> optuna.Study | None:
    """Another study in the same storage (the leaky-folds twin of a study), or None."""
    try:
        return optuna.load_study(study_name=name, storage=study._storage)
    except KeyError:
        return None


# ---- a running trial -----------------------------------------------------------------------------


def start(trial: optuna.Trial, arm: str, stage: str, config: dict[str, Any], sources: dict[str, str],
          fingerprint: str) -> None:
    for k, v in (("arm", arm), ("stage", stage), ("config", config), ("sources", sources),
                 ("fingerprint", fingerprint)):
        trial.set_user_attr(k, v)


def add_folds(trial: optuna.Trial, folds: list[FoldScore]) -> None:
    """Store the folds so far (a pruned or failed trial keeps what it finished)."""
    trial.set_user_attr("folds", [dataclasses.asdict(f) for f in folds])
    trial.set_user_attr("fold_scores", [f.score for f in folds])  # readable at a glance in the dashboard
    trial.set_user_attr("seconds", round(sum(f.seconds for f in folds), 2))


SPEED = "speed:"  # study attribute SPEED<trial number>: that trial's inference cost (a finished trial is read-only)


def set_speed(study: optuna.Study, number: int, speed: dict[str, Any]) -> None:
    """A finished trial's inference cost (study.speed.Speed as JSON), one study attribute per trial
    (no read-modify-write: processes on other machines may time other trials at the same time)."""
    study.set_user_attr(f"{SPEED}{number}", speed)


def made_trial(state: TrialState, arm: str, folds: list[FoldScore], stage: str = "ablation",
               tuned: dict[str, tuple[Any, Any]] | None = None, config: dict[str, Any] | None = None,
               fail_reason: str | None = None, speed: dict[str, Any] | None = None) -> FrozenTrial:
    """A finished trial with its record, made outside a study run (tests, imports from elsewhere).
    `tuned` maps a parameter to (value, Optuna distribution)."""
    tuned = tuned or {}
    user: dict[str, Any] = {"arm": arm, "stage": stage, "config": config or {},
                            "folds": [dataclasses.asdict(f) for f in folds], "fold_scores": [f.score for f in folds]}
    if fail_reason is not None:
        user["fail_reason"] = fail_reason
    if speed is not None:
        user["speed"] = speed
    scores = [f.score for f in folds]
    value = sum(scores) / len(scores) if state == TrialState.COMPLETE and scores else None
    return optuna.trial.create_trial(state=state, value=value, user_attrs=user,
                                     params={param_key(arm, k): v for k, (v, _) in tuned.items()},
                                     distributions={param_key(arm, k): d for k, (_, d) in tuned.items()})


def queue_attrs(arm: str, stage: str, **extra: Any) -> dict[str, Any]:
    """The attributes a queued trial carries: its arm, its stage and anything else given."""
    return {"arm": arm, "stage": stage, **extra}


def queued_copy(t: FrozenTrial) -> tuple[str | None, str, dict[str, Any], dict[str, Any]]:
    """What a fresh copy of an unfinished trial is queued with: arm, stage, its fixed tuned
    values, and the attributes that travel with it."""
    rec = trial_record(t)
    prefix = param_key(str(rec.arm), "")
    params = {k: v for k, v in {**_fixed(t), **t.params}.items() if k.startswith(prefix)}
    keep = {k: t.user_attrs[k] for k in ("tuned_in", "added") if k in t.user_attrs}
    return rec.arm, rec.stage, params, keep | {"retry_of": t.number}


def set_worker(study: optuna.Study, trial_id: int, worker: dict[str, Any]) -> None:
    study._storage.set_trial_user_attr(trial_id, "worker", worker)


def mark_unfinished(study: optuna.Study, trial_id: int, flag: str) -> None:
    """Flag a trial as no result (one of UNFINISHED); raises if it finished meanwhile."""
    assert flag in UNFINISHED, flag
    study._storage.set_trial_user_attr(trial_id, flag, True)


def set_fail_reason(study: optuna.Study, trial_id: int, reason: str) -> None:
    study._storage.set_trial_user_attr(trial_id, "fail_reason", reason)


def set_device_error(study: optuna.Study, trial_id: int, reason: str) -> None:
    study._storage.set_trial_user_attr(trial_id, "device_error", reason)


def enqueued_arm(trial: optuna.Trial) -> str | None:
    """The arm an enqueued trial was queued for (None: the sampler chooses)."""
    arm = trial.user_attrs.get("arm")
    if arm is None:  # legacy: arms were enqueued as a fixed 'arm' parameter
        arm = (trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params") or {}).get("arm")
    return arm


def trial_stage(trial: optuna.Trial, default: str) -> str:
    return str(trial.user_attrs.get("stage", default))


def trial_retries(trial: optuna.Trial) -> int:
    return int(trial.user_attrs.get("retries", 0))

