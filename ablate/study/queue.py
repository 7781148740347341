"""The trial queue on Optuna's storage: enqueue, claim, run with a heartbeat, recover, retry.

- Arms are enqueued as WAITING trials that carry their arm (and stage) as attributes; workers
  claim them with the storage's atomic WAITING -> RUNNING transition, so no arm runs twice, on
  one machine or many.
- A trial left RUNNING by a dead worker is failed and queued again, once, by whichever process
  won the RUNNING -> FAIL transition (heartbeats on RDB storages; on this host also a check that
  the worker's process is gone). Finished trials are never trained again.
- A trial that failed because of the device (CUDA out of memory, a fatal CUDA error) is not a
  result: it is queued again, up to MAX_DEVICE_RETRIES times, and after a fatal error the worker
  stops instead of failing every remaining arm in seconds.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import first_line
from ablate.study import records

HEARTBEAT_S = 10  # RDB heartbeat interval; a trial silent for GRACE_S is stale
GRACE_S = 40
MAX_DEVICE_RETRIES = 2


class DeviceBroken(RuntimeError):
    """The worker's GPU hit a fatal error: this process cannot use it any more."""


def worker_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid())}


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux), to tell a live worker from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _abandoned(t: FrozenTrial) -> bool:
    """A RUNNING trial whose worker ran on this host and is gone, or that no worker ever claimed
    as its own within the grace period (a worker killed between taking it and recording itself)."""
    w = records.trial_record(t).worker
    if not isinstance(w, dict):
        started = t.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() > GRACE_S
    if w.get("host") != socket.gethostname():
        return False
    return _proc_start(int(w["pid"])) != w.get("start") or not os.path.exists(f"/proc/{w['pid']}")


def enqueue(study: optuna.Study, arm: str, stage: str, params: dict[str, Any] | None = None, **extra: Any) -> None:
    """Queue one trial of `arm`: its fixed parameters (if any) and attributes travel with it."""
    study.enqueue_trial(params or {}, user_attrs=records.queue_attrs(arm, stage, **extra), skip_if_exists=False)


def requeue(study: optuna.Study, t: FrozenTrial, **extra: Any) -> None:
    """Queue a fresh copy of a trial that did not finish (same arm, stage and fixed parameters)."""
    arm, stage, params, keep = records.queued_copy(t)
    if arm is None:  # a sampled trial killed before it chose its arm: let the sampler choose again
        return
    enqueue(study, arm, stage, params, **keep, **extra)


def recover_stale(study: optuna.Study) -> int:
    """Fail and queue again the trials left RUNNING by dead workers; returns how many."""
    storage = study._storage
    recovered = 0
    if isinstance(storage, RDBStorage):  # heartbeats: fails silent trials, requeues via the callback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _abandoned(t):
            continue
        try:
            records.mark_unfinished(study, t._trial_id, "stale")  # a finished trial takes no attrs
            won = storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another process got there first and queued it again
        if won:
            requeue(study, t)
            recovered += 1
    return recovered


def heartbeat_failed(study: optuna.Study, t: FrozenTrial) -> None:
    """RDBStorage's stale-trial callback: mark the trial unfinished and queue it again."""
    try:
        records.mark_unfinished(study, t._trial_id, "stale")
    except UpdateFinishedTrialError:
        pass
    requeue(study, t)


def claim_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (WAITING -> RUNNING); None when there is none left."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                records.set_worker(study, t._trial_id, worker_id())  # at once: see _abandoned
                return optuna.Trial(study, t._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def sample(study: optuna.Study) -> optuna.Trial:
    """A new trial from the sampler, recorded as this worker's at once."""
    trial = study.ask()
    records.set_worker(study, trial._trial_id, worker_id())
    return trial


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a claimed trial back in the queue, unrun (this worker cannot run it)."""
    _unfinished(study, trial, "requeued")


def discard_duplicate(study: optuna.Study, trial: optuna.Trial) -> None:
    """Close a claimed trial that duplicates one holding its arm's place (not a result, not queued again)."""
    records.mark_unfinished(study, trial._trial_id, "duplicate")
    study.tell(trial, state=TrialState.FAIL)


@dataclass
class TrialOutcome:
    number: int
    arm: str
    state: str
    value: float | None
    reason: str = ""


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e, 480)}"


def _free_device_memory() -> None:
    """After an out-of-memory error (never after a fatal one: the broken context would raise again)."""
    import torch

    gc.collect()
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except RuntimeError:
        pass


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]) -> TrialOutcome:
    """Run one claimed trial with a heartbeat and tell the storage how it ended. Raises DeviceBroken
    after a fatal device error (the trial is queued again first)."""
    storage = study._storage
    stop = threading.Event()
    beat = None
    if isinstance(storage, RDBStorage):
        def pump() -> None:
            while not stop.wait(HEARTBEAT_S):
                storage.record_heartbeat(trial._trial_id)

        storage.record_heartbeat(trial._trial_id)
        beat = threading.Thread(target=pump, daemon=True)
        beat.start()
    arm = lambda: records.trial_record(storage.get_trial(trial._trial_id)).arm or "?"  # noqa: E731
    try:
        value = objective(trial)
        study.tell(trial, value)
        return TrialOutcome(trial.number, arm(), "COMPLETE", value)
    except optuna.TrialPruned as e:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialOutcome(trial.number, arm(), "PRUNED", None, str(e))
    except KeyboardInterrupt:  # unfinished, not a result: failed without a reason, queued again
        _unfinished(study, trial, "interrupted")
        raise
    except Exception as e:  # NaN loss, a component error: recorded, the study goes on
        return _failed(study, trial, e, arm)
    finally:
        stop.set()
        if beat:
            beat.join(timeout=1)


def _unfinished(study: optuna.Study, trial: optuna.Trial, why: str, **extra: Any) -> None:
    records.mark_unfinished(study, trial._trial_id, why)
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study._storage.get_trial(trial._trial_id), **extra)


def _failed(study: optuna.Study, trial: optuna.Trial, e: Exception, arm: Callable[[], str]) -> TrialOutcome:
    from ablate.device import device_failure  # torch: only where a trial failed

    reason = _reason(e)
    kind = device_failure(e)
    retries = records.trial_retries(trial)
    if kind and retries < MAX_DEVICE_RETRIES:  # the device's fault: not a result of the arm
        records.set_device_error(study, trial._trial_id, reason)
        _unfinished(study, trial, "requeued", retries=retries + 1)  # first, whatever the device does next
        if kind == "fatal":
            raise DeviceBroken(f"trial {trial.number}: {reason}") from e
        _free_device_memory()
        return TrialOutcome(trial.number, arm(), "FAIL", None, f"{reason} (queued again)")
    if kind:
        reason += f" (after {retries} retries)"
    records.set_fail_reason(study, trial._trial_id, reason)
    study.tell(trial, state=TrialState.FAIL)
    if kind == "fatal":
        raise DeviceBroken(f"trial {trial.number}: {reason}") from e
    return TrialOutcome(trial.number, arm(), "FAIL", None, reason)
