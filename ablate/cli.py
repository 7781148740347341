"""The `ablate` command line: a table of commands, each handler returns an exit code.

Heavy libraries (torch, pyarrow, scikit-learn, optuna) are imported inside handlers so that
`ablate --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ablate.cli_final import add_commands as add_final_commands
from ablate.errors import UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _progress(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress counter on a terminal; silent otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


# ---- data -------------------------------------------------------------------------------------


def cmd_data_synth(a: argparse.Namespace) -> int:
    from ablate.data.synth import SynthConfig, generate

    given = {"n_signs": a.signs, "n_participants": a.participants, "reps": a.reps, "seed": a.seed,
             "difficulty": a.difficulty}
    cfg = SynthConfig(**{k: v for k, v in given.items() if v is not None})
    summary = generate(Path(a.out), cfg, workers=a.workers, progress=_progress("synth"))
    _say(f"wrote {summary['sequences']} sequences ({cfg.n_signs} signs, {cfg.n_participants} participants) "
         f"to {a.out} in {summary['seconds']:.1f}s")
    return 0


def cmd_data_ingest(a: argparse.Namespace) -> int:
    from ablate.data.cache import ingest

    r = ingest(Path(a.dir), Path(a.cache) if a.cache else None, workers=a.workers, rebuild=a.rebuild,
               progress=_progress("ingest"))
    for s in r.skipped:
        print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    state = "updated" if r.changed else "already up to date"
    _say(f"cache {r.cache_dir} {state}: {r.total} listed, {r.read} read ({r.frames_read} frames), "
         f"{r.reused} reused, {len(r.skipped)} skipped; {r.seconds:.1f}s; fingerprint {r.fingerprint}")
    return 0


def _cache_path(arg: str | None) -> Path:
    from ablate.data.cache import resolve_cache_dir
    from ablate.data.default import default_cache

    return resolve_cache_dir(Path(arg)) if arg else default_cache()


def cmd_data_info(a: argparse.Namespace) -> int:
    from ablate.data.cache import Cache

    info = Cache(_cache_path(a.cache)).info()
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    _say(f"cache        {info['cache']}\nsource       {info['source']}\nfingerprint  {info['fingerprint']}\n"
         f"sequences    {info['sequences']}\nparticipants {info['participants']}\n"
         f"signs        {info['signs']} (of {info['signs_in_map']} in the sign map)\n"
         f"frames       min {info['frames_min']}, median {info['frames_median']:g}, max {info['frames_max']}, "
         f"total {info['frames_total']}\n"
         f"missing hand {pct(info['missing_a_hand'])} of frames (left {pct(info['missing_left_hand'])}, "
         f"right {pct(info['missing_right_hand'])}, both {pct(info['missing_both_hands'])})\n"
         f"skipped      {info['skipped']} file(s) at ingest")
    return 0


def cmd_data_folds(a: argparse.Namespace) -> int:
    import numpy as np

    from ablate.data.cache import Cache
    from ablate.data.folds import GROUPED, UNGROUPED_LEAKY

    cache = Cache(_cache_path(a.cache))
    kind = UNGROUPED_LEAKY if a.ungrouped_leaky else GROUPED
    fold = cache.folds(a.k, a.seed, kind)
    if kind == UNGROUPED_LEAKY:
        _say("UNGROUPED (leaky) folds: participants appear in several folds; for showing leakage only")
    for f in range(a.k):
        sel = fold == f
        parts = np.unique(cache.participants[sel])
        _say(f"fold {f}: {int(sel.sum())} sequences, {len(parts)} participants "
             f"({', '.join(map(str, parts[:8]))}{', ...' if len(parts) > 8 else ''})")
    return 0


# ---- components ---------------------------------------------------------------------------------


def cmd_list(a: argparse.Namespace) -> int:
    from ablate.components import REGISTRIES

    kinds = [a.kind] if a.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
            from ablate.errors import unknown

            raise unknown("component kind", kind, REGISTRIES)
        reg = REGISTRIES[kind]
        _say(f"{kind} ({len(reg)}):")
        for e in reg:
            params = ", ".join(f"{k}={v!r}" for k, v in e.params.items())
            tags = f" [{', '.join(sorted(e.tags))}]" if e.tags else ""
            _say(f"  {e.name:<20} {e.description}{tags}")
            if params:
                _say(f"  {'':<20} {params}")
    return 0


# ---- studies -------------------------------------------------------------------------------------


def _text_table(result: dict) -> str:
    """The verdict table for a terminal (the same numbers as the report and the dashboard note)."""
    f = lambda v, d=4: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    g = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    rows = [("arm", "folds", "mean acc [95% CI]", "diff vs baseline [CI]", "p corr (Holm)", "p Wilcoxon (Holm)", "verdict")]
    for r in result["arms"]:
        rows.append((r["arm"], str(r["n"]), f"{f(r['mean'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]",
                     f"{f(r['diff'])} [{f(r['diff_low'])}, {f(r['diff_high'])}]", g(r["p_corrected_holm"]),
                     g(r["p_wilcoxon_holm"]), r["verdict"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def cmd_run(a: argparse.Namespace) -> int:
    from ablate.report.analysis import analyze
    from ablate.runner import RunArgs, run

    if a.workers < 1 or a.seeds < 1:
        raise UserError(f"--workers and --seeds must be at least 1 (got {a.workers} and {a.seeds})")
    study = run(RunArgs(space=a.space, preset=a.preset, data=a.data, storage=a.storage, study=a.study,
                        workers=a.workers, seeds=a.seeds, n_trials=a.n_trials, timeout=a.timeout,
                        pruning=a.pruning, leaky_folds=a.leaky_folds))
    result = analyze(study)
    _say(f"\nstudy {result['study']}: {result['question']}")
    _say(_text_table(result))
    for w in result["warnings"]:
        _say(f"warning: {w}")
    paths = write_reports(_studies(a.storage, [study.study_name]), Path("reports"))
    from ablate.notes import attach

    attach(study, str(paths[0]), "text/html")
    _say(f"report: {paths[0]} (all studies: reports/index.html)")
    _say(f"watch it: ablate dashboard{' --storage ' + a.storage if a.storage else ''}")
    return 0


def _studies(storage_url: str | None, spaces: list[str]) -> list:  # list[optuna.Study]
    import optuna

    from ablate.errors import unknown
    from ablate.study import open_storage

    storage = open_storage(storage_url)
    found = []
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    for s in summaries:
        if not spaces or s.user_attrs.get("space") in spaces or s.study_name in spaces:
            found.append(optuna.load_study(study_name=s.study_name, storage=storage))
    missing = [x for x in spaces if not any(st.user_attrs.get("space") == x or st.study_name == x for st in found)]
    if missing:
        known = sorted({s.user_attrs.get("space", s.study_name) for s in summaries})
        raise unknown("study or space (no study of it in this storage)", missing[0], known)
    return found


def write_reports(studies: list, out: Path, alpha: float = 0.05, rope: tuple[float, float] | None = None) -> list[Path]:
    from ablate.report.writer import write_index, write_report

    paths = [write_report(s, out, alpha=alpha, rope=rope) for s in studies]
    write_index(out)
    return paths


def cmd_report(a: argparse.Namespace) -> int:
    import json

    rope = tuple(a.rope) if a.rope else None
    if rope and not rope[0] < rope[1]:
        raise UserError(f"--rope {rope[0]} {rope[1]}: expected LOW < HIGH, e.g. --rope -0.01 0.01")
    studies = _studies(a.storage, a.spaces)
    if not studies:
        raise UserError("no studies in this storage yet (run `ablate run SPACE` first)")
    if a.format == "json":
        from ablate.report.writer import report_json

        out = [report_json(s, alpha=a.alpha, rope=rope) for s in studies]
        print(json.dumps(out if len(out) > 1 else out[0], indent=1, allow_nan=False))
        return 0
    for p in write_reports(studies, Path(a.out), a.alpha, rope):
        _say(f"wrote {p}")
    _say(f"wrote {Path(a.out) / 'index.html'}")
    return 0


def cmd_dashboard(a: argparse.Namespace) -> int:
    import optuna_dashboard

    from ablate.study import default_storage_url, mask_url, open_storage

    from ablate.notes import artifact_store

    storage = open_storage(a.storage)
    _say(f"optuna-dashboard on http://{a.host}:{a.port} for {mask_url(a.storage or default_storage_url())} "
         f"(Ctrl-C stops it)")
    optuna_dashboard.run_server(storage, host=a.host, port=a.port, artifact_store=artifact_store())
    return 0


# ---- the table ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ablate", description="Ablation studies for isolated sign-language recognition.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    data = sub.add_parser("data", help="generate, ingest and inspect data sets")
    data.set_defaults(func=lambda _a: (data.print_help(), EXIT_USER_ERROR)[1])
    dsub = data.add_subparsers(dest="data_command", metavar="STEP", parser_class=_Parser)
    s = dsub.add_parser("synth", help="write a synthetic data set in the Kaggle asl-signs layout")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--signs", type=int, default=None, help="number of signs (full size: 250)")
    s.add_argument("--participants", type=int, default=None, help="number of participants (full size: 21)")
    s.add_argument("--reps", type=int, default=None, help="sequences per participant and sign (full size: 18)")
    s.add_argument("--seed", type=int, default=None, help="generator seed")
    s.add_argument("--difficulty", type=float, default=None, help="1.0 default; 0 is easy")
    s.add_argument("--workers", type=int, default=1, help="writer processes")
    s.set_defaults(func=cmd_data_synth)
    i = dsub.add_parser("ingest", help="build or update the landmark cache of a Kaggle-layout directory")
    i.add_argument("dir", help="directory with train.csv, train_landmark_files/ and the sign map")
    i.add_argument("--cache", help="cache directory (default: $ABLATE_HOME/cache/<name>-<hash>)")
    i.add_argument("--workers", type=int, default=None, help="reader threads (default: all cores)")
    i.add_argument("--rebuild", action="store_true", help="ignore the existing cache and rebuild it")
    i.set_defaults(func=cmd_data_ingest)
    n = dsub.add_parser("info", help="print counts for a cache")
    n.add_argument("cache", nargs="?", help="cache or data directory (default: the embedded synthetic set)")
    n.set_defaults(func=cmd_data_info)
    f = dsub.add_parser("folds", help="print the stored cross-validation folds")
    f.add_argument("cache", nargs="?", help="cache or data directory (default: the embedded synthetic set)")
    f.add_argument("--k", type=int, default=5, help="number of folds (default 5)")
    f.add_argument("--seed", type=int, default=0, help="fold seed (default 0)")
    f.add_argument("--ungrouped-leaky", action="store_true",
                   help="ungrouped StratifiedKFold: participants leak across folds (to show the leak only)")
    f.set_defaults(func=cmd_data_folds)

    r = sub.add_parser("run", help="run or resume the study of a search space (e.g. `ablate run losses`)")
    r.add_argument("space", help="a search space in search_spaces/ (losses, optimizers, features, augmentations, model)")
    r.add_argument("--data", help="Kaggle-layout data directory or cache (default: the embedded synthetic set)")
    r.add_argument("--preset", help="training budget from base.yaml: smoke, quick (default), full")
    r.add_argument("--storage", help="Optuna storage: postgresql://user:pass@host/db, or a journal file "
                                     "(default: $ABLATE_HOME/studies.journal)")
    r.add_argument("--study", help="study name (default: SPACE-PRESET)")
    r.add_argument("--workers", type=int, default=1, help="local worker processes on this study (default 1)")
    r.add_argument("--seeds", type=int, default=1, help="training seeds per fold (default 1; 2 gives 10 pairs)")
    r.add_argument("--n-trials", type=int, default=None,
                   help="tune mode: the study's trial budget; ablation: at most this many trials in this run")
    r.add_argument("--timeout", type=float, default=None, help="start no new trial after this many seconds")
    r.add_argument("--pruning", choices=("auto", "on", "off"), default="auto",
                   help="Wilcoxon pruning over folds; auto = on when folds x seeds >= 6")
    r.add_argument("--leaky-folds", action="store_true",
                   help="ungrouped folds (participants leak), as the study SPACE-PRESET-leaky: only to show "
                        "how much leakage over-states accuracy next to the grouped study")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="write reports/<study>.html (paired statistics) and reports/index.html")
    rp.add_argument("spaces", nargs="*", metavar="SPACE", help="spaces or study names (default: every study)")
    rp.add_argument("--storage", help="Optuna storage URL or journal file (default: $ABLATE_HOME/studies.journal)")
    rp.add_argument("--out", default="reports", help="output folder (default: reports/)")
    rp.add_argument("--format", choices=("html", "json"), default="html", help="html files, or JSON on stdout")
    rp.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)")
    rp.add_argument("--rope", type=float, nargs=2, metavar=("LOW", "HIGH"),
                    help="region of practical equivalence for the accuracy difference, e.g. -0.01 0.01")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("dashboard", help="start optuna-dashboard on the studies' storage")
    d.add_argument("--storage", help="Optuna storage URL or journal file (default: $ABLATE_HOME/studies.journal)")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    d.set_defaults(func=cmd_dashboard)

    ls = sub.add_parser("list", help="list registered components, their parameters and defaults")
    ls.add_argument("kind", nargs="?", help="one kind only (features, augmentations, models, losses, ...)")
    ls.set_defaults(func=cmd_list)

    add_final_commands(sub)  # finalize, predict
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:  # no command: show the help
            parser.print_help()
            return EXIT_USER_ERROR
        return int(func(args))
    except UserError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
