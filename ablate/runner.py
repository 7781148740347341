"""`ablate run SPACE`: prepare the study, run N workers on it, print progress, refresh the note.

The main process prepares (data, study, enqueued arms); workers (this process when N = 1, else
N spawned processes) claim trials until none is left, the budget is spent or the time is up.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ablate import study as st
from ablate.data.cache import Cache, ingest
from ablate.data.folds import GROUPED, UNGROUPED_LEAKY
from ablate.objective import Objective
from ablate.report.analysis import LEAKY_SUFFIX
from ablate.spaces import Space, load_space


@dataclass(frozen=True)
class RunArgs:
    space: str
    preset: str | None = None
    data: str | None = None  # a Kaggle-layout directory or a cache; None = the embedded synthetic set
    storage: str | None = None
    study: str | None = None  # study name override
    workers: int = 1
    seeds: int = 1
    n_trials: int | None = None
    timeout: float | None = None
    pruning: str = "auto"  # auto | on | off
    leaky_folds: bool = False  # ungrouped folds, in a study of its own, to measure the leakage


def resolve_data(data: str | None) -> Path:
    """The cache directory to train on: ingest a data directory (incremental), or the default set."""
    from ablate.data.cache import META, resolve_cache_dir
    from ablate.data.default import default_cache

    if data is None:
        return default_cache()
    path = Path(data)
    if (path / "train.csv").is_file():
        report = ingest(path)
        return report.cache_dir
    if (path / META).is_file():
        return path
    return resolve_cache_dir(path)  # Cache() will say what is missing


def _pruning_on(mode: str, folds: int, seeds: int) -> bool:
    """WilcoxonPruner needs >= 6 paired fold scores before it can ever reach p < 0.05."""
    return mode == "on" or (mode == "auto" and folds * seeds >= 6)


def study_attrs(space: Space, preset: str, data: Cache, args: RunArgs) -> dict[str, Any]:
    base = space.config(space.baseline, preset)
    return {
        "space": space.name, "question": space.question, "axis": space.axis, "mode": space.mode,
        "baseline": space.baseline, "arms": list(space.arms), "preset": preset, "seeds": args.seeds,
        "folds": base.folds, "fold_seed": base.fold_seed, "fingerprint": data.fingerprint,
        "fold_kind": UNGROUPED_LEAKY if args.leaky_folds else GROUPED,
        "data": {"source": data.meta["source"], "sequences": len(data), "signs": data.num_classes,
                 "participants": int(len(set(data.participants.tolist())))},
        "recipe": base.to_dict(), "n_trials": space.n_trials, "space_file": str(space.path),
    }


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


def _budget_left(study: optuna.Study, space: Space, n_trials: int | None) -> bool:
    """Tune mode: may another trial be sampled? (counts every trial that holds a place)."""
    if space.mode != "tune":
        return False
    budget = n_trials or space.n_trials
    return sum(st.occupies(t) for t in study.get_trials(deepcopy=False)) < budget


def work(args: RunArgs, cache_dir: str, name: str, worker: int = 0, deadline: float | None = None,
         limit: int | None = None) -> list[st.TrialOutcome]:
    """One worker: claim or sample trials and run them until nothing is left."""
    space = load_space(args.space)
    preset = args.preset or space.default_preset
    data = Cache(Path(cache_dir))
    storage = st.open_storage(args.storage)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=worker, multivariate=True, group=True, n_startup_trials=5),
                              pruner=optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2))
    log = _Printer(f"[w{worker}] " if args.workers > 1 else "", live=args.workers == 1)
    objective = Objective(space, preset, data, args.seeds,
                          _pruning_on(args.pruning, study.user_attrs.get("folds", 5), args.seeds), log,
                          fold_kind=study.user_attrs.get("fold_kind", GROUPED))
    if space.mode != "tune" and args.n_trials:  # ablation: at most this many trials in this run
        limit = args.n_trials if limit is None else min(limit, args.n_trials)
    outcomes: list[st.TrialOutcome] = []
    while (deadline is None or time.time() < deadline) and (limit is None or len(outcomes) < limit):
        st.recover_stale(study)
        trial = st.claim_waiting(study)
        if trial is None and _budget_left(study, space, args.n_trials):
            trial = study.ask()
        if trial is None:
            break
        out = st.run_trial(study, trial, objective)
        outcomes.append(out)
        best = _best(study)
        log(f"trial {out.number} [{out.arm}] {out.state}"
            + (f": mean acc {out.value:.4f}" if out.value is not None else f" ({out.reason})" if out.reason else "")
            + (f" | best so far {best[1]:.4f} [{best[0]}]" if best else "")
            + f" | {_done(study)} trials finished")
        from ablate.notes import refresh_note

        refresh_note(study)
    return outcomes


def _best(study: optuna.Study) -> tuple[str, float] | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    t = max(done, key=lambda t: t.value or 0.0)
    return str(t.user_attrs.get("arm", "?")), float(t.value or 0.0)


def _done(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state.is_finished() for t in trials)
    return f"{finished}/{len(trials)}"


def _spawned(args: RunArgs, cache_dir: str, name: str, worker: int, deadline: float | None) -> None:
    try:
        work(args, cache_dir, name, worker, deadline)
    except KeyboardInterrupt:
        pass


def _run_workers(args: RunArgs, cache_dir: str, name: str, deadline: float | None) -> None:
    if args.workers <= 1:
        work(args, cache_dir, name, 0, deadline)
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spawned, args=(args, cache_dir, name, i, deadline)) for i in range(args.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    failed = [i for i, p in enumerate(procs) if p.exitcode]
    if failed:
        print(f"ablate: warning: worker(s) {failed} exited with an error; their trials are re-run "
              "on the next `ablate run`", file=sys.stderr)


def run(args: RunArgs) -> optuna.Study:
    """Prepare and run a study; returns it when the workers are done."""
    space = load_space(args.space)
    preset = args.preset or space.default_preset
    if preset not in space.presets:
        from ablate.errors import unknown

        raise unknown("preset", preset, space.presets)
    cache_dir = resolve_data(args.data)
    data = Cache(cache_dir)
    attrs = study_attrs(space, preset, data, args)
    storage = st.open_storage(args.storage)
    name = args.study or st.study_name(space, preset) + (LEAKY_SUFFIX if args.leaky_folds else "")
    study, created = st.load_or_create(space, preset, storage, name, attrs)
    where = st.mask_url(args.storage or st.default_storage_url())
    if created:
        st.enqueue_missing(study, space) if space.mode != "tune" else None
        study.set_user_attr("enqueued", True)
    else:
        st.check_compatible(study, attrs, where)
        st.wait_until_enqueued(study)
        recovered = st.recover_stale(study)
        added = st.enqueue_missing(study, space) if space.mode != "tune" else 0
        print(f"resuming study {name!r}: {_done(study)} trials finished, {recovered} stale recovered, "
              f"{added} re-enqueued", file=sys.stderr)
    study.set_user_attr("storage", where)
    from ablate.notes import refresh_note

    refresh_note(study)
    print(f"study {name!r} ({space.mode}, {len(space.arms)} arms, preset {preset}, {attrs['folds']} folds x "
          f"{args.seeds} seed(s)) on {data.fingerprint} in {where}", file=sys.stderr, flush=True)
    deadline = time.time() + args.timeout if args.timeout else None
    _run_workers(args, str(cache_dir), name, deadline)
    if space.mode == "both" and st.enqueue_compare(study, space):
        print("tuning stage done; comparing each arm's best parameters with fresh seeds", file=sys.stderr)
        _run_workers(args, str(cache_dir), name, deadline)
    refresh_note(study)
    return study
