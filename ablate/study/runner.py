"""`ablate run SPACE`: prepare the study, run N workers on it, print progress, refresh the note.

The main process prepares (data, study, queued arms); workers (this process when N = 1, else N
spawned processes) claim trials until none is left, the budget is spent or the time is up. Spawned
workers stop with the main process, however it ends: on Linux the kernel sends them SIGTERM when
it dies (PR_SET_PDEATHSIG), elsewhere they check between trials; a trial cut short is queued again.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import optuna
import torch

from ablate.data.cache import META, Cache, resolve_cache_dir
from ablate.data.drop import check_drops
from ablate.data.folds import GROUPED, UNGROUPED_LEAKY
from ablate.data.ingest import ingest
from ablate.data.participants import participant_facts, sequence_table
from ablate.device import cpu_cores, place, release_memory
from ablate.errors import EXIT_DEVICE, EXIT_USER_ERROR, UserError
from ablate.spaces import Space, load_space
from ablate.study import predictions, queue, records, speed
from ablate.study.dashboard import refresh_note
from ablate.study.modes import Mode, mode_of
from ablate.study.objective import Objective
from ablate.study.setup import new_meta, prepare, pruner, same_spec, sampler
from ablate.study.storage import open_storage, storage_label

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunArgs:
    space: str
    preset: str | None = None
    recipe: str | None = None  # one of base.yaml's recipes; None: the space file's, else baseline
    data: str | None = None  # a Kaggle-layout directory or a cache; None = the embedded synthetic set
    storage: str | None = None
    study: str | None = None  # study name override
    workers: int = 1
    seeds: int = 1
    repeats: int = 1  # re-partitions of the data, each with K folds (repeated cross-validation)
    n_trials: int | None = None
    timeout: float | None = None
    pruning: str = "auto"  # auto | on | off
    leaky_folds: bool = False  # ungrouped folds, in a study of its own, to measure the leakage
    timed: bool = True  # measure each trial's inference cost (model, features and recipe axes)
    devices: str | None = None  # the workers' devices, e.g. "0,1" (default: worker i on GPU i mod G)


def resolve_data(data: str | None) -> Path:
    """The cache directory to train on: ingest a data directory (incremental), or the default set."""
    from ablate.data.default import default_cache

    if data is None:
        return default_cache()
    path = Path(data)
    if (path / "train.csv").is_file():
        return ingest(path).cache_dir
    if (path / META).is_file():
        return path
    return resolve_cache_dir(path)  # Cache() will say what is missing


def _pruning_on(asked: str, meta: records.StudyMeta) -> bool:
    """Only tune mode (and the tuning stage of both) prunes: it saves compute there and decides
    nothing, while a pruned ablation arm would get no verdict. WilcoxonPruner needs >= 6 paired fold
    scores before it can ever reach p < 0.05."""
    if meta.mode == "ablation":
        return False
    return asked == "on" or (asked == "auto" and meta.folds * meta.seeds * meta.repeats >= 6)


class _Printer:
    """Progress lines: per-fold lines always; per-epoch lines only on a terminal, overwritten."""

    def __init__(self, prefix: str = "", live: bool = True) -> None:
        self.prefix = prefix
        self.live = live and sys.stderr.isatty()

    def __call__(self, line: str, transient: bool = False) -> None:
        if transient:
            if self.live:
                print(f"\r\033[K{self.prefix}{line}", end="", file=sys.stderr, flush=True)
            return
        end = "\r\033[K" if self.live else ""
        print(f"{end}{self.prefix}{line}", file=sys.stderr, flush=True)


def _next_trial(study: optuna.Study, meta: records.StudyMeta, mode: Mode, n_trials: int | None) -> optuna.Trial | None:
    """A queued trial (skipping duplicates that two processes queued at once), else a sampled one."""
    while True:
        trial = queue.claim_waiting(study)
        if trial is None:
            break
        recs = records.trial_records(study, meta)
        mine = next(r for r in recs if r.number == trial.number)
        if not mode.is_duplicate(mine, recs, meta):
            return trial
        queue.discard_duplicate(study, trial)
    if mode.may_sample(records.trial_records(study, meta), meta, n_trials):
        return queue.sample(study)
    return None


class _Worker:
    """One worker's copy of the space file and the study's metadata, reloaded when a trial it
    claims is of an arm that its copy does not define as the study does (the study grew, or
    another machine's file differs)."""

    def __init__(self, args: RunArgs, cache_dir: str, name: str, index: int) -> None:
        self.args, self.name, self.index = args, name, index
        placement = place(args.devices, torch.cuda.device_count())
        self.device = placement.of(index)
        # the workers of this machine on the same device divide its memory for resident data, and
        # workers on the CPU divide its cores (each would otherwise start one thread per core)
        self.sharing = max(1, sum(placement.of(i) == self.device for i in range(args.workers)))
        if self.device == "cpu" and self.sharing > 1:
            torch.set_num_threads(max(1, cpu_cores() // self.sharing))
        self.data = Cache(Path(cache_dir))
        self.study = optuna.load_study(study_name=name, storage=open_storage(args.storage), sampler=sampler(index),
                                       pruner=pruner())
        self.log = _Printer(f"[w{index}] " if args.workers > 1 else "", live=args.workers == 1)
        self.load()

    def load(self) -> None:
        self.meta = records.read_meta(self.study)
        self.space = load_space(self.args.space, recipe=self.meta.recipe_name)
        if self.meta.fingerprint and self.data.fingerprint != self.meta.fingerprint:
            raise UserError(f"cache {self.data.dir}: its data changed (fingerprint {self.data.fingerprint}) since "
                            f"study {self.name!r} began on {self.meta.fingerprint}; this worker stops")
        self.mode = mode_of(self.meta.mode)
        pruning = _pruning_on(self.args.pruning, self.meta)
        self.objective = Objective(self.space, self.meta, self.mode, self.data, pruning, self.log, self.device,
                                   sharing=self.sharing)

    def knows(self, arm: str | None) -> bool:
        if arm is None:
            return True
        stored = self.meta.arms.get(arm)
        return arm in self.space.arms and (stored is None or same_spec(self.space.arms[arm].spec(), stored))

    def check(self, trial: optuna.Trial) -> None:
        arm = records.enqueued_arm(trial)
        if self.knows(arm):
            return
        self.load()
        if not self.knows(arm):
            queue.give_back(self.study, trial)
            raise UserError(f"study {self.name!r}: arm {arm!r} is not defined in {self.space.path} as the study "
                            f"defines it; trial {trial.number} is queued again and this worker stops (update the file)")


def work(args: RunArgs, cache_dir: str, name: str, worker: int = 0, deadline: float | None = None,
         parent: int | None = None) -> list[queue.TrialOutcome]:
    """One worker: claim or sample trials and run them until nothing is left. Raises
    queue.DeviceBroken after a fatal device error (the trial is queued again first)."""
    w = _Worker(args, cache_dir, name, worker)
    limit = args.n_trials if w.meta.mode != "tune" else None  # ablation: at most this many trials in this run
    outcomes: list[queue.TrialOutcome] = []
    while (deadline is None or time.time() < deadline) and (limit is None or len(outcomes) < limit):
        if parent is not None and os.getppid() != parent:
            break  # the main process is gone (where PR_SET_PDEATHSIG is not available)
        queue.recover_stale(w.study)
        trial = _next_trial(w.study, w.meta, w.mode, args.n_trials)
        if trial is None:
            break
        w.check(trial)
        out = queue.run_trial(w.study, trial, w.objective)
        release_memory()
        outcomes.append(out)
        w.log(_outcome_line(w.study, out))
        refresh_note(w.study)
    return outcomes


def _outcome_line(study: optuna.Study, out: queue.TrialOutcome) -> str:
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    trials = study.get_trials(deepcopy=False)
    best = max(done, key=lambda t: t.value or 0.0) if done else None
    line = f"trial {out.number} [{out.arm}] {out.state}"
    line += f": mean acc {out.value:.4f}" if out.value is not None else f" ({out.reason})" if out.reason else ""
    if best is not None:
        line += f" | best so far {best.value or 0.0:.4f} [{records.trial_record(best).arm}]"
    return line + f" | {sum(t.state.is_finished() for t in trials)}/{len(trials)} trials finished"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # once: a worker re-parented to a multi-threaded subreaper can receive the parent-death signal
    # again, which must not cut short the clean-up (queueing its trial again) that this one starts
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux), and stop now if it already has."""
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a trial cut short is queued again, not lost
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(0)


def _spawned(args: RunArgs, cache_dir: str, name: str, worker: int, deadline: float | None, parent: int) -> None:
    _die_with_parent(parent)
    try:
        work(args, cache_dir, name, worker, deadline, parent)
    except KeyboardInterrupt:
        pass
    except queue.DeviceBroken as e:
        _device_message(worker, e)
        raise SystemExit(EXIT_DEVICE) from None
    except UserError as e:
        print(f"ablate: worker {worker}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def _device_message(worker: int, e: BaseException) -> None:
    print(f"ablate: worker {worker}: the device failed ({e}); its trial is queued again and this worker stopped",
          file=sys.stderr, flush=True)


def _run_workers(args: RunArgs, cache_dir: str, name: str, deadline: float | None) -> bool:
    """Run the workers until they are done; True when a worker stopped because its device broke."""
    if args.workers <= 1:
        try:
            work(args, cache_dir, name, 0, deadline)
        except queue.DeviceBroken as e:
            _device_message(0, e)
            return True
        return False
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spawned, args=(args, cache_dir, name, i, deadline, os.getpid()))
             for i in range(args.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    failed = [i for i, p in enumerate(procs) if p.exitcode not in (0, EXIT_DEVICE)]
    if failed:
        print(f"ablate: warning: worker(s) {failed} exited with an error; their trials are re-run "
              "on the next `ablate run`", file=sys.stderr)
    return any(p.exitcode == EXIT_DEVICE for p in procs)


def run(args: RunArgs) -> optuna.Study:
    """Prepare and run a study; returns it when the workers are done."""
    return run_with_status(args)[0]


def run_with_status(args: RunArgs) -> tuple[optuna.Study, bool]:
    """`run`, and whether a worker stopped because its device broke (its trial is queued again)."""
    space = load_space(args.space, recipe=args.recipe)
    preset = args.preset or space.default_preset
    space.base.preset(preset)  # an unknown preset is refused before any data is read
    if args.pruning == "on" and space.mode == "ablation":
        raise UserError(f"--pruning on: {space.path} is in ablation mode, which never prunes (a pruned arm gets no "
                        "verdict); pruning is for modes tune and both")
    placement = place(args.devices, torch.cuda.device_count())  # a bad --devices before any data is read
    cache_dir = resolve_data(args.data)
    data = Cache(cache_dir)
    check_drops(space, preset, data, args.repeats)  # before anything is written
    where = storage_label(args.storage)
    name = args.study or records.study_name(space.name, space.base.recipe_name, preset, args.leaky_folds)
    meta = new_meta(space, preset, data, args.seeds, UNGROUPED_LEAKY if args.leaky_folds else GROUPED, where,
                    args.repeats)
    storage = open_storage(args.storage)
    # the participant table of a new study (or one begun before the panel), made before anything is
    # written: a bad participants.csv stops the run here
    facts = None if predictions.stored_for(storage, name) else participant_facts(data)
    p = prepare(storage, name, space, meta)
    study, meta = p.study, p.meta
    if facts is not None and not predictions.has_sequences(study):
        predictions.write_sequences(study, sequence_table(data, facts), data.labels, facts)
    for note in p.notes:
        print(f"note: {note}", file=sys.stderr)
    if not p.created:
        grown = f", {len(p.added_arms)} new arm(s) ({', '.join(p.added_arms)})" if p.added_arms else ""
        trials = study.get_trials(deepcopy=False)
        print(f"resuming study {name!r}: {sum(t.state.is_finished() for t in trials)}/{len(trials)} trials finished, "
              f"{p.recovered} stale recovered, {p.queued} queued{grown}", file=sys.stderr)
    refresh_note(study)
    reps = f"{meta.repeats} repeats x " if meta.repeats > 1 else ""
    print(f"study {name!r} ({meta.mode}, {len(meta.arms)} arms, recipe {meta.recipe_name}, preset {preset}, {reps}{meta.folds} folds x "
          f"{meta.seeds} seed(s)) on {data.fingerprint} in {where}; worker device(s): "
          f"{', '.join(placement.of(i) for i in range(args.workers))}", file=sys.stderr, flush=True)
    deadline = time.time() + args.timeout if args.timeout else None
    broken = _run_workers(args, str(cache_dir), name, deadline)
    mode = mode_of(meta.mode)
    while not broken and (deadline is None or time.time() < deadline) and \
            mode.next_stage(study, space, records.trial_records(study, meta)):
        print("tuning done for some arm(s); comparing their best parameters with fresh seeds", file=sys.stderr)
        broken = _run_workers(args, str(cache_dir), name, deadline)
    if args.timed and not broken:
        speed.time_trials(study, data, lambda line: print(line, file=sys.stderr, flush=True))
    refresh_note(study)
    return study, broken
