"""The `ablate` command line: a table of commands, each handler returns an exit code.

Heavy libraries (torch, pyarrow, scikit-learn, optuna) are imported inside handlers so that
`ablate --help` answers at once. `main` is the one boundary where the user's mistakes become one
line and exit code 2: a UserError (a value, a name, a file's content), a usage error, and any OS
error about a path the user gave or implied (unreadable, a directory where a file belongs, a
read-only folder, a full disk) all print `ablate: error: ...` and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ablate.cli_args import finite_float, positive_float, positive_int, probability
from ablate.cli_data import add_commands as add_data_commands
from ablate.cli_final import add_commands as add_final_commands
from ablate.errors import EXIT_DEVICE, EXIT_USER_ERROR, UserError, os_error_line


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---- components ---------------------------------------------------------------------------------


def cmd_list(a: argparse.Namespace) -> int:
    from ablate.components import REGISTRIES
    from ablate.errors import unknown

    kinds = [a.kind] if a.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
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
    from ablate.report.analysis import TABLE_HEAD, verdict_cells

    rows = [TABLE_HEAD, *verdict_cells(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def cmd_run(a: argparse.Namespace) -> int:
    from ablate.report.analysis import analyze
    from ablate.report.participants_html import effect_sentences
    from ablate.report.verdict_html import sensitivity_text
    from ablate.study.dashboard import attach
    from ablate.study.runner import RunArgs, run_with_status
    from ablate.study.storage import mask_url

    study, broken = run_with_status(RunArgs(space=a.space, preset=a.preset, recipe=a.recipe, data=a.data, storage=a.storage, study=a.study,
                        workers=a.workers, seeds=a.seeds, repeats=a.repeats, n_trials=a.n_trials, timeout=a.timeout,
                        pruning=a.pruning, leaky_folds=a.leaky_folds, devices=a.devices, timed=not a.no_speed))
    result = analyze(study)
    _say(f"\nstudy {result['study']}: {result['question']}")
    _say(_text_table(result))
    _say(sensitivity_text(result))
    for line in effect_sentences(result):
        _say(f"who it helps: {line}")
    for w in result["warnings"]:
        _say(f"warning: {w}")
    paths = write_reports([study], Path("reports"))
    attach(study, str(paths[0]), "text/html")
    _say(f"report: {paths[0]} (all studies: reports/index.html)")
    storage = f" --storage {mask_url(a.storage)}" if a.storage else ""
    _say(f"watch it: ablate dashboard{storage}" + (" (password hidden)" if a.storage and mask_url(a.storage) != a.storage else ""))
    if broken:
        print("ablate: a worker's device failed; its trial is queued again: run the same command on a healthy "
              "device to finish the study", file=sys.stderr)
        return EXIT_DEVICE
    return 0


def _studies(storage_url: str | None, spaces: list[str]) -> list:  # list[optuna.Study]
    """The ablate studies of a storage whose space or name is in `spaces` (all when empty)."""
    import optuna

    from ablate.errors import unknown
    from ablate.study.records import study_metas
    from ablate.study.storage import open_storage

    storage = open_storage(storage_url, create=False)
    metas = study_metas(storage)
    chosen = [name for name, m in metas if not spaces or m.space in spaces or name in spaces]
    missing = [x for x in spaces if not any(m.space == x or name == x for name, m in metas)]
    if missing:
        raise unknown("study or space (no study of it in this storage)", missing[0], sorted({m.space for _, m in metas}))
    return [optuna.load_study(study_name=name, storage=storage) for name in chosen]


def write_reports(studies: list, out: Path, alpha: float = 0.05, rope: tuple[float, float] | None = None) -> list[Path]:
    from ablate.report.writer import write_index, write_report

    paths = [write_report(s, out, alpha=alpha, rope=rope) for s in studies]
    write_index(out)
    return paths


def cmd_report(a: argparse.Namespace) -> int:
    import json

    rope = tuple(a.rope) if a.rope else None
    if rope and not rope[0] <= 0 <= rope[1] or rope and rope[0] == rope[1]:
        raise UserError(f"--rope {rope[0]} {rope[1]}: expected LOW <= 0 <= HIGH and LOW < HIGH, e.g. --rope -0.01 0.01")
    studies = _studies(a.storage, a.spaces)
    if not studies:
        raise UserError("no studies in this storage yet (run `ablate run SPACE` first)")
    if a.format == "json":
        from ablate.report.writer import report_json

        out = [report_json(s, alpha=a.alpha, rope=rope) for s in studies]
        print(json.dumps(out if len(out) > 1 else out[0], indent=1, allow_nan=False))
        return 0
    out_dir = Path(a.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file, expected a folder for the reports")
    for p in write_reports(studies, out_dir, a.alpha, rope):
        _say(f"wrote {p}")
    _say(f"wrote {out_dir / 'index.html'}")
    return 0


def cmd_dashboard(a: argparse.Namespace) -> int:
    import optuna_dashboard

    from ablate.study.dashboard import artifact_store
    from ablate.study.storage import open_storage, storage_label

    storage = open_storage(a.storage, create=False)
    _say(f"optuna-dashboard on http://{a.host}:{a.port} for {storage_label(a.storage)} (Ctrl-C stops it)")
    optuna_dashboard.run_server(storage, host=a.host, port=a.port, artifact_store=artifact_store())
    return 0


# ---- the table ----------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run or resume the study of a search space (e.g. `ablate run losses`)")
    r.add_argument("space", help="a search space in search_spaces/ (losses, optimizers, features, augmentations, model)")
    r.add_argument("--data", help="Kaggle-layout data directory or cache (default: the embedded synthetic set)")
    r.add_argument("--preset", help="training budget from base.yaml: smoke, quick (default), full")
    r.add_argument("--recipe", help="the recipe the arms change: baseline or another of base.yaml's recipes "
                                    "(winner); default: the space file's recipe, else baseline")
    r.add_argument("--storage", help="Optuna storage: postgresql://user:pass@host/db, or a journal file "
                                     "(default: $ABLATE_HOME/studies.journal)")
    r.add_argument("--study", help="study name (default: SPACE-PRESET, or SPACE-RECIPE-PRESET); a new name starts a new study, e.g. after "
                                   "changing an arm's definition")
    r.add_argument("--workers", type=positive_int, default=1, help="local worker processes on this study (default 1)")
    r.add_argument("--devices", help="the workers' devices, cycled: e.g. 0,1 or cuda:0,cuda:0,cuda:1 or cpu "
                                     "(default: worker i on GPU i mod G, or the CPU); used where the recipe says device: auto")
    r.add_argument("--seeds", type=positive_int, default=1,
                   help="training seeds per fold, averaged per fold before the tests (default 1)")
    r.add_argument("--repeats", type=positive_int, default=1,
                   help="repeated cross-validation: R participant-grouped partitions of K folds each, "
                        "R x K paired units (default 1)")
    r.add_argument("--n-trials", type=positive_int, default=None,
                   help="tune mode: the study's trial budget; ablation: at most this many trials in this run")
    r.add_argument("--timeout", type=positive_float, default=None, help="start no new trial after this many seconds")
    r.add_argument("--pruning", choices=("auto", "on", "off"), default="auto",
                   help="Wilcoxon pruning over folds, tune and both modes only (ablation never prunes); "
                        "auto = on when repeats x folds x seeds >= 6")
    r.add_argument("--no-speed", action="store_true",
                   help="on the model, features and recipe axes, skip timing each arm's exported model when "
                        "the workers are done (an ONNX export and about a second of calls per arm)")
    r.add_argument("--leaky-folds", action="store_true",
                   help="ungrouped folds (participants leak), as the study SPACE-PRESET-leaky: only to show "
                        "how much leakage over-states accuracy next to the grouped study")
    r.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ablate", description="Ablation studies for isolated sign-language recognition.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_data_commands(sub, _Parser)
    _add_run(sub)
    rp = sub.add_parser("report", help="write reports/<study>.html (paired statistics) and reports/index.html")
    rp.add_argument("spaces", nargs="*", metavar="SPACE", help="spaces or study names (default: every study)")
    rp.add_argument("--storage", help="Optuna storage URL or journal file (default: $ABLATE_HOME/studies.journal)")
    rp.add_argument("--out", default="reports", help="output folder (default: reports/)")
    rp.add_argument("--format", choices=("html", "json"), default="html", help="html files, or JSON on stdout")
    rp.add_argument("--alpha", type=probability, default=0.05,
                    help="level of the details section's Holm-adjusted corrected t-test (default 0.05); the "
                         "verdicts use the posterior at 0.975 per side")
    rp.add_argument("--rope", type=finite_float, nargs=2, metavar=("LOW", "HIGH"),
                    help="region of practical equivalence of the accuracy difference, e.g. -0.01 0.01 "
                         "(default: the space file's rope, else -0.005 0.005)")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("dashboard", help="start optuna-dashboard on the studies' storage")
    d.add_argument("--storage", help="Optuna storage URL or journal file (default: $ABLATE_HOME/studies.journal)")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")
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
        return _error(str(e))
    except OSError as e:  # a path the user gave or implied: unreadable, a directory, read-only, disk full
        return _error(os_error_line(e))
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever a library put in its message
    print(f"ablate: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
