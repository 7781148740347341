"""Studies: storage, enqueueing arms, workers, resume. Optuna's storage is the distributed engine.

- Default storage: one Optuna journal file under $ABLATE_HOME (file-locked: safe for several
  local worker processes). `--storage postgresql://...` runs one study from many machines.
- Ablation arms are enqueued once, by the process that creates the study; workers claim WAITING
  trials with the storage's atomic WAITING -> RUNNING transition, so no arm runs twice.
- Resume: a trial left RUNNING by a dead worker is failed (heartbeats on RDB storages; on this
  host also a check that the worker's process is gone) and re-enqueued once, by whichever process
  won the RUNNING -> FAIL transition. Finished trials are never trained again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ablate.data.cache import ablate_home
from ablate.errors import UserError
from ablate.objective import STAGE_COMPARE, STAGE_TUNE, param_key
from ablate.spaces import Space

HEARTBEAT_S = 10  # RDB heartbeat interval; a trial silent for GRACE_S is stale
GRACE_S = 40
optuna.logging.set_verbosity(optuna.logging.WARNING)
# WilcoxonPruner, TPE's `group` and heartbeats are marked experimental; versions are pinned.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage_url() -> str:
    return str(ablate_home() / "studies.journal")


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ***."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def open_storage(url: str | None) -> BaseStorage:
    """An Optuna storage from a URL (postgresql://, mysql://, sqlite:///) or a journal file path."""
    url = url or default_storage_url()
    if "://" in url:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=retry, engine_kwargs={"pool_pre_ping": True})
        except Exception as e:  # connection refused, unknown driver, bad URL: a user problem
            raise UserError(f"storage {mask_url(url)}: cannot open ({str(e).strip().splitlines()[0][:200]})") from None
    from optuna.storages.journal import JournalFileBackend

    path = os.path.abspath(url)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return JournalStorage(JournalFileBackend(path))


def study_name(space: Space, preset: str) -> str:
    return f"{space.name}-{preset}"


def _worker_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid())}


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux), to tell a live worker from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _dead_here(t: FrozenTrial) -> bool:
    """A RUNNING trial whose worker ran on this host and whose process is gone."""
    w = t.user_attrs.get("worker")
    if not isinstance(w, dict) or w.get("host") != socket.gethostname():
        return False
    return _proc_start(int(w["pid"])) != w.get("start") or not os.path.exists(f"/proc/{w['pid']}")


def occupies(t: FrozenTrial) -> bool:
    """Whether a trial holds its arm's place (a FAIL without a reason was killed: it does not)."""
    return t.state != TrialState.FAIL or "fail_reason" in t.user_attrs


def retry(study: optuna.Study, t: FrozenTrial) -> None:
    """Enqueue a fresh copy of a trial that a dead or interrupted worker left unfinished."""
    attrs = {k: t.user_attrs[k] for k in ("stage",) if k in t.user_attrs}
    study.enqueue_trial(t.params, user_attrs={**attrs, "retry_of": t.number})


def recover_stale(study: optuna.Study) -> int:
    """Fail and re-enqueue trials left RUNNING by dead workers; returns how many."""
    storage = study._storage
    recovered = 0
    if isinstance(storage, RDBStorage):  # heartbeats: fails silent trials, retries via the callback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead_here(t):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "stale", True)  # a finished trial takes no attrs
            won = storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another process got there first and re-enqueued it
        if won:
            retry(study, t)
            recovered += 1
    return recovered


def _arm_of(t: FrozenTrial) -> str | None:
    return t.params.get("arm", (t.system_attrs.get("fixed_params") or {}).get("arm"))


def enqueue_missing(study: optuna.Study, space: Space) -> int:
    """Enqueue every arm (ablation) or every arm's tune budget (both) that has no trial holding it."""
    trials = study.get_trials(deepcopy=False)
    count: dict[str, int] = {a: 0 for a in space.arms}
    for t in trials:
        arm = _arm_of(t)
        if arm in count and occupies(t) and t.user_attrs.get("stage") != STAGE_COMPARE:
            count[arm] += 1
    wanted = 1 if space.mode == "ablation" else space.n_trials
    added = 0
    for arm, have in count.items():
        for _ in range(wanted - have):
            attrs = {"stage": STAGE_TUNE} if space.mode == "both" else {}
            study.enqueue_trial({"arm": arm}, user_attrs=attrs)
            added += 1
    return added


def enqueue_compare(study: optuna.Study, space: Space) -> int:
    """'both' mode, second stage: each arm's best tuned params, evaluated again with fresh seeds."""
    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("stage") == STAGE_COMPARE and occupies(t) for t in trials):
        return 0
    if any(not t.state.is_finished() for t in trials):
        return 0  # the tuning stage is not over (stopped by --timeout or --n-trials)
    added = 0
    for arm in space.arms:
        done = [t for t in trials if _arm_of(t) == arm and t.state == TrialState.COMPLETE]
        if done:
            best = max(done, key=lambda t: t.value or 0.0)
            study.enqueue_trial({k: v for k, v in best.params.items() if k == "arm" or k.startswith(param_key(arm, ""))},
                                user_attrs={"stage": STAGE_COMPARE, "tuned_in": best.number})
            added += 1
    return added


def claim_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (WAITING -> RUNNING); None when there is none left."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


@dataclass
class TrialOutcome:
    number: int
    arm: str
    state: str
    value: float | None
    reason: str = ""


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]) -> TrialOutcome:
    """Run one claimed trial with a heartbeat, and tell the storage how it ended."""
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "worker", _worker_id())
    stop = threading.Event()
    beat = None
    if isinstance(storage, RDBStorage):
        def pump() -> None:
            while not stop.wait(HEARTBEAT_S):
                storage.record_heartbeat(trial._trial_id)

        storage.record_heartbeat(trial._trial_id)
        beat = threading.Thread(target=pump, daemon=True)
        beat.start()
    def arm() -> str:  # known once the objective has suggested it (sampled trials) or from the queue
        fixed = storage.get_trial_system_attrs(trial._trial_id).get("fixed_params") or {}
        return str(trial.params.get("arm", fixed.get("arm", "?")))

    try:
        value = objective(trial)
        study.tell(trial, value)
        return TrialOutcome(trial.number, arm(), "COMPLETE", value)
    except optuna.TrialPruned as e:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialOutcome(trial.number, arm(), "PRUNED", None, str(e))
    except KeyboardInterrupt:
        # unfinished, not a result: fail it without a reason and queue it again for the next run
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        retry(study, study._storage.get_trial(trial._trial_id))
        raise
    except Exception as e:  # NaN loss, out of memory, a component error: recorded, the study goes on
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        return TrialOutcome(trial.number, arm(), "FAIL", None, reason)
    finally:
        stop.set()
        if beat:
            beat.join(timeout=1)


def load_or_create(space: Space, preset: str, storage: BaseStorage, name: str, attrs: dict[str, Any],
                   seed: int = 0) -> tuple[optuna.Study, bool]:
    """The study, created with its attributes if new (then `created` is True)."""
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
    pruner = optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=sampler, pruner=pruner)
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        return study, True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        return study, False


def check_compatible(study: optuna.Study, attrs: dict[str, Any], where: str) -> None:
    """A resumed study must be the same question on the same data, folds and seeds."""
    for key in ("fingerprint", "folds", "seeds", "fold_seed", "fold_kind", "axis"):
        have = study.user_attrs.get(key)
        if have is not None and have != attrs.get(key):
            raise UserError(f"study {study.study_name!r} in {where} was started with {key}={have!r}, "
                            f"this run has {key}={attrs.get(key)!r}; use --study NAME for a new study")


def wait_until_enqueued(study: optuna.Study, timeout: float = 120.0) -> None:
    """Another process is creating this study: wait until it has enqueued the arms."""
    end = time.monotonic() + timeout
    while not study.user_attrs.get("enqueued") and time.monotonic() < end:
        time.sleep(0.5)
