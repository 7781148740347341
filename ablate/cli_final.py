"""The last two commands: `ablate finalize` (train the winner on every fold, export, check) and
`ablate predict` (run an exported model on competition files). Imports stay inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ablate.cli_args import positive_int
from ablate.errors import UserError

EXIT_CHECKS_FAILED = 1


def _spaces(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = list(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))  # once each, in order
    if not names:
        raise UserError("--from: expected comma-separated search spaces, e.g. --from losses,optimizers")
    return names


def cmd_finalize(a: argparse.Namespace) -> int:
    from ablate.export.check import FP16_MIN_SEQUENCES
    from ablate.export.convert import ExportError
    from ablate.final.run import ChecksFailed, FinalizeArgs, finalize
    from ablate.train import TrainingDiverged

    if a.check_sequences < FP16_MIN_SEQUENCES:
        raise UserError(f"--check-sequences: the fp16 parity target needs at least {FP16_MIN_SEQUENCES}, "
                        f"got {a.check_sequences}")
    args = FinalizeArgs(spaces=_spaces(a.from_), preset=a.preset, study_preset=a.study_preset, recipe=a.recipe,
                        data=a.data,
                        storage=a.storage, out=a.out, reports=a.reports, prefer_mean=a.prefer_mean,
                        prefer_faster=a.prefer == "faster-if-equivalent", tta=a.tta,
                        ensemble=a.ensemble, seeds_per_fold=a.seeds_per_fold, full_data=a.full_data,
                        check_sequences=a.check_sequences, check_files=tuple(a.check_files), quantize=a.quantize,
                        export=not a.no_export)
    try:
        summary = finalize(args)
    except ChecksFailed as e:
        print(f"ablate: finalize: checks failed: {e}", file=sys.stderr)
        return EXIT_CHECKS_FAILED
    except ExportError as e:
        print(f"ablate: finalize: export failed: {e}", file=sys.stderr)
        return EXIT_CHECKS_FAILED
    except TrainingDiverged as e:
        print(f"ablate: finalize: training diverged: {e}", file=sys.stderr)
        return EXIT_CHECKS_FAILED
    _print_summary(summary, Path(a.out), Path(a.reports))
    return 0


def _print_summary(s: dict[str, Any], out: Path, reports: Path) -> None:
    oof = s["training"]["oof"]
    if oof is None:
        print(f"no out-of-fold accuracy: {s['training']['note']}")
    else:
        print(f"out-of-fold accuracy, pooled over {oof['n']} sequences: {oof['pooled']:.4f}")
    if oof and "rules" in oof:
        rules = ", ".join(f"{r} {v['pooled']:.4f}" for r, v in oof["rules"].items())
        print(f"ensemble rules on the out-of-fold predictions of each fold's {oof['seeds']} seeds: {rules} "
              f"(exported: {oof['rule']})")
    e = s.get("export")
    if e:
        lat, size, par = e["latency_ms"], e["size_mb"], e["parity"]
        print(f"model: {e['deliverable']} (fp16, {size['fp16']:.2f} MB; fp32 {size['fp32']:.2f} MB; limit {size['limit']:.0f} MB)")
        print(f"latency, 1 thread: {lat['fp16_1t']['mean_ms']:.2f} ms per sequence (median length "
              f"{lat['fp16_1t']['lengths_median']:.0f}; {lat['fp16_1t']['max_len_ms']:.1f} ms at {e['crop']} frames; limit {lat['limit']:.0f} ms)")
        print(f"parity with PyTorch on {par['tests']} sequences: fp32 max |diff| {par['fp32']['max_abs']:.2e}, "
              f"argmax {par['fp32']['argmax_agreement']:.2%}; fp16 argmax {par['fp16']['argmax_agreement']:.2%}")
        for tta, value in (e.get("oof_accuracy_by_tta") or {}).items():
            print(f"out-of-fold accuracy with TTA {tta} (fp32 PyTorch): {value:.4f}")
        for w in e["warnings"]:
            print(f"note: {w}")
    print(f"report: {reports / 'final.html'}; summary: {out / 'final.json'}")


def cmd_predict(a: argparse.Namespace) -> int:
    from ablate.export.predict import predict

    results = predict(Path(a.model), [Path(f) for f in a.files], a.sign_map, a.top, a.threads)
    if a.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: cannot read: {r['error']}")
                continue
            signs = "  ".join(f"{t['sign']} {t['p']:.3f}" for t in r["top"])
            print(f"{r['file']} ({r['frames']} frames): {signs}")
    return 2 if any("error" in r for r in results) else 0


def add_commands(sub: Any) -> None:
    f = sub.add_parser("finalize", help="train the winning recipe on every fold and export one TFLite model")
    f.add_argument("--from", dest="from_", metavar="SPACES",
                   help="comma-separated spaces whose studies choose (default: every space with a study)")
    f.add_argument("--preset", help="training preset for the final folds (default: the studies' preset, else base.yaml's default)")
    f.add_argument("--recipe", default="baseline",
                   help="the recipe to start from, and whose studies choose: baseline (default) or another of "
                        "base.yaml's recipes (winner)")
    f.add_argument("--study-preset", help="preset the studies ran under (default: --preset, else base.yaml's default_preset)")
    f.add_argument("--data", help="Kaggle-layout data directory or cache (default: the embedded synthetic set)")
    f.add_argument("--storage", help="Optuna storage URL or journal file (default: $ABLATE_HOME/studies.journal)")
    f.add_argument("--out", default="final", help="output folder: weights, model.tflite, final.json (default: final/)")
    f.add_argument("--reports", default="reports", help="where final.html goes (default: reports/)")
    f.add_argument("--quantize", choices=("fp16", "int8"), default="fp16",
                   help="the deliverable's precision: fp16 weights (default) or int8 (TFLite dynamic range, about half "
                        "the fp16 size); int8 gets the same parity gate (argmax agreement >= 99.5%%) and its accuracy "
                        "against fp32 on each fold's held-out sequences")
    f.add_argument("--prefer", choices=("better", "faster-if-equivalent"), default="better",
                   help="better (default): take an arm only when its verdict is better; faster-if-equivalent: "
                        "failing that, take the fastest arm whose verdict is equivalent and whose exported model "
                        "is at most 80%% of the baseline's latency (compose.FASTER; studies of the model, features and recipe axes)")
    f.add_argument("--prefer-mean", action="store_true",
                   help="take a study's highest-mean arm even when its verdict is not 'better'")
    f.add_argument("--tta", choices=("none", "hflip"), default="none",
                   help="test-time augmentation inside the exported graph: average with the mirrored sequence")
    f.add_argument("--ensemble", choices=("mean", "vote", "max"), default="mean",
                   help="how the models' probabilities are combined: their mean (default), a vote of their top "
                        "classes (ties: the mean), or the highest single probability")
    f.add_argument("--seeds-per-fold", type=positive_int, default=1, metavar="N",
                   help="train each fold N times (seeds recipe seed .. + N-1), all in the ensemble; with N > 1 the "
                        "report compares the ensemble rules on each fold's held-out sequences")
    f.add_argument("--full-data", action="store_true",
                   help="train the N models (--seeds-per-fold) on all the data instead of the folds: nothing is "
                        "held out, so there is no out-of-fold estimate")
    f.add_argument("--check-sequences", type=positive_int, default=200,
                   help="data sequences the export is checked on (default 200, the fp16 target's minimum)")
    f.add_argument("--check-files", nargs="+", default=[], metavar="PATH",
                   help="competition landmark files, or folders of them, added to the parity checks "
                        "(e.g. ../shared/data/asl-signs-sample)")
    f.add_argument("--no-export", action="store_true", help="train the folds only")
    f.set_defaults(func=cmd_finalize)

    p = sub.add_parser("predict", help="top-5 signs for competition landmark files, with an exported model")
    p.add_argument("model", help="a .tflite file written by `ablate finalize`")
    p.add_argument("files", nargs="+", metavar="FILE.parquet", help="landmark files in the competition's format")
    p.add_argument("--sign-map", help="sign_to_prediction_index_map.json (default: the one beside the model)")
    p.add_argument("--top", type=positive_int, default=5, help="signs shown per file (default 5)")
    p.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default 1, as in the competition)")
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    p.set_defaults(func=cmd_predict)
