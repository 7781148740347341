"""Creating a study, or resuming one: the same question on the same data, and arms that can grow.

A resumed study must ask the same question: the same data, folds, seeds, axis, mode, baseline,
preset, and the same base recipe on every key both versions have (a key added to base.yaml by
later work does not lock older studies). Its arms are compared as the space file defines them
(not as resolved configs): an arm whose definition changed, or that was removed, is refused with
what changed; an arm added to the file is queued, on the same folds and seeds, and reported.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage

from ablate.config import ADDED_KEYS
from ablate.data.cache import Cache
from ablate.errors import UserError
from ablate.feed import DATA_PATH
from ablate.resolve import resolve
from ablate.spaces import Space
from ablate.study import queue, records
from ablate.study.modes import mode_of
from ablate.study.records import StudyMeta

_SAME = ("fingerprint", "folds", "seeds", "repeats", "fold_seed", "fold_kind", "axis", "mode", "baseline", "preset",
         "recipe_name")


def sampler(seed: int = 0) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # TPE's `group` is marked experimental; the version is pinned
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)


def pruner() -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():  # marked experimental; the version is pinned
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)


def other_recipes(space: Space) -> dict[str, Any]:
    """The recipes the recipe axis's arms start from, as base.yaml writes them now: a resumed study
    and finalize compare them with what the study began on."""
    names = sorted({str(a.overrides["recipe"]) for a in space.arms.values() if "recipe" in a.overrides})
    return {n: space.base.for_recipe(n).recipe for n in names}


def new_meta(space: Space, preset: str, data: Cache, seeds: int, fold_kind: str, storage: str,
             repeats: int = 1) -> StudyMeta:
    base = resolve(space.base, preset, space.arms[space.baseline]).config
    written = {"recipe": space.base.recipe, "preset": {"scalars": space.base.presets[preset].scalars,
                                                       "component_params": space.base.presets[preset].component_params},
               "recipes": other_recipes(space)}
    return StudyMeta(
        space=space.name, question=space.question, axis=space.axis, mode=space.mode, baseline=space.baseline,
        arms={label: arm.spec() for label, arm in space.arms.items()}, preset=preset, seeds=seeds,
        folds=base.folds, fold_seed=base.fold_seed, fold_kind=fold_kind, fingerprint=data.fingerprint,
        data={"source": data.meta["source"], "sequences": len(data), "signs": data.num_classes,
              "participants": int(len(set(data.participants.tolist())))},
        recipe=base.to_dict(), base_written=json.loads(json.dumps(written)), n_trials=space.n_trials,
        space_file=str(space.path), storage=storage, data_path=DATA_PATH, repeats=repeats, rope=list(space.rope),
        recipe_name=space.base.recipe_name)


@dataclass
class Prepared:
    study: optuna.Study
    meta: StudyMeta
    created: bool
    added_arms: list[str] = field(default_factory=list)
    queued: int = 0
    recovered: int = 0
    notes: list[str] = field(default_factory=list)


def prepare(storage: BaseStorage, name: str, space: Space, meta: StudyMeta) -> Prepared:
    """Create the study (and queue its arms) or resume it (checked, grown, queue refilled).
    A resume that is refused writes nothing: the study is looked up before any create is tried."""
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        return _resume(optuna.load_study(study_name=name, storage=storage, sampler=sampler(), pruner=pruner()),
                       space, meta)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler(),
                                    pruner=pruner())
    except DuplicatedStudyError:  # another process created it a moment ago
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler(), pruner=pruner())
        return _resume(study, space, meta)
    records.write_meta(study, meta)
    queued = mode_of(meta.mode).queue_missing(study, space, [], meta)
    records.mark_enqueued(study)
    return Prepared(study, meta, True, queued=queued)


def _resume(study: optuna.Study, space: Space, meta: StudyMeta) -> Prepared:
    if not _wait_for(lambda: records.has_meta(study), 10.0):  # its creator writes it right after creating it
        raise UserError(f"study {study.study_name!r} in {meta.storage} has no ablate metadata (not made by ablate, "
                        "or its creation was interrupted); use --study NAME")
    _wait_for(lambda: records.is_enqueued(study), 120.0)  # then queues the arms; if it died, we queue them
    old = records.read_meta(study)
    _check_same_question(study.study_name, old, meta)
    merged, added, notes = _grow(study.study_name, old, meta, space)
    records.write_meta(study, merged)
    recovered = queue.recover_stale(study)
    queued = mode_of(merged.mode).queue_missing(study, space, records.trial_records(study, merged), merged)
    return Prepared(study, merged, False, added, queued, recovered, notes)


def _wait_for(done: Callable[[], bool], timeout: float) -> bool:
    """Another process is creating this study: wait a while for it (False: it did not get there)."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            return False
        time.sleep(0.5)
    return True


def _check_same_question(name: str, old: StudyMeta, new: StudyMeta) -> None:
    hint = "; use --study NAME to start a new study"
    for key in _SAME:
        have, want = getattr(old, key), getattr(new, key)
        if have not in ("", None) and have != want:
            raise UserError(f"study {name!r} in {new.storage} was started with {key}={have!r}, this run has "
                            f"{key}={want!r}{hint}")
    if old.data_path != new.data_path:
        began = old.data_path or "the per-sequence input path of earlier versions"
        raise UserError(f"study {name!r} was trained with {began}; this version trains with {new.data_path} "
                        f"(other augmentation draws or batch shapes): their numbers are not comparable{hint}")
    if old.base_written:  # a key added to base.yaml since: as if it had held the neutral value
        began = {**old.base_written, "recipe": {**ADDED_KEYS, **old.base_written.get("recipe", {})}}
        changed = differences(began, new.base_written, shared_only=True)
        if changed:
            raise UserError(f"study {name!r}: base.yaml changed since the study began ({'; '.join(changed[:4])}); "
                            f"its arms would train on different recipes{hint}")


def _grow(name: str, old: StudyMeta, new: StudyMeta, space: Space) -> tuple[StudyMeta, list[str], list[str]]:
    """The stored arms, checked against the file's, plus any new ones (in file order)."""
    notes: list[str] = []
    arms = dict(old.arms)
    for label, spec in old.arms.items():
        if label not in new.arms:
            raise UserError(f"study {name!r}: arm {label!r} was removed from {space.path}; put it back, or use "
                            "--study NAME to start a new study without it")
        if spec is None:  # a study from before arm specs were stored: adopt the file's
            arms[label] = new.arms[label]
            notes.append(f"arm {label}: its definition was not recorded by the version that began the study; "
                         "recorded now")
            continue
        changed = differences(spec, new.arms[label])
        if changed:
            raise UserError(f"study {name!r}: arm {label!r} changed in {space.path} since the study began "
                            f"({'; '.join(changed[:4])}); restore it, or use --study NAME to start a new study "
                            "(or add the new definition as an arm with a new label)")
    added = [a for a in new.arms if a not in arms]
    for a in added:
        arms[a] = new.arms[a]
    if list(old.rope) != list(new.rope):  # how the evidence is read, not how it was made: the file's wins
        notes.append(f"rope: {list(old.rope)} -> {list(new.rope)} (from {space.path}); the verdicts follow it")
    merged = StudyMeta(**{**old.to_json(), "arms": arms, "storage": new.storage, "space_file": new.space_file,
                          "question": new.question or old.question, "rope": list(new.rope), "base_written": old.base_written or new.base_written,
                          "recipe": old.recipe or new.recipe})
    if added and old.mode == "tune":  # Optuna fixes a categorical's choices: sample the grown set under a new name
        merged.arm_param = f"arm@{len(arms)}"
        merged.added_arms = [*old.added_arms, *added]  # each gets one queued trial (Tune.queue_missing)
    return merged, added, notes


def same_spec(a: Any, b: Any) -> bool:
    """Two arm specifications (as stored: JSON forms) define the same arm."""
    return not differences(a, b)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted path (an empty mapping has none: `params: {}` equals no params)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: value}


def differences(old: Any, new: Any, shared_only: bool = False) -> list[str]:
    """'path: old -> new' for every leaf that differs (JSON forms: tuples and lists compare equal)."""
    a, b = _flat(json.loads(json.dumps(old))), _flat(json.loads(json.dumps(new)))
    keys = [k for k in a if k in b] if shared_only else list(dict.fromkeys([*a, *b]))
    return [f"{k.removeprefix('overrides.')}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
            for k in keys if a.get(k) != b.get(k)]
