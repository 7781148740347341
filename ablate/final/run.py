"""`ablate finalize`: compose the recipe, train every fold (resumable), export, check, report."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ablate.errors import UserError
from ablate.report.final_html import write_final_page
from ablate.report.writer import PACKAGES, git_commit, versions

FINAL_JSON = "final.json"
EXPORT_PACKAGES = ("tensorflow", "onnx", "onnx2tf", "ai-edge-litert")  # versions recorded beside the model


# import name -> the package that provides it (the `export` extra)
EXPORT_MODULES = {"onnx": "onnx", "onnxscript": "onnxscript", "onnx2tf": "onnx2tf", "tensorflow": "tensorflow",
                  "tf_keras": "tf-keras", "ai_edge_litert": "ai-edge-litert", "onnx_graphsurgeon": "onnx-graphsurgeon",
                  "sng4onnx": "sng4onnx", "sne4onnx": "sne4onnx", "psutil": "psutil"}


def _check_export_installed() -> None:
    from importlib.util import find_spec

    missing = [pkg for mod, pkg in EXPORT_MODULES.items() if find_spec(mod) is None]
    if missing:
        raise UserError(f"export needs {', '.join(missing)}: pip install -c constraints.txt -e '.[export]' "
                        "(or pass --no-export to train the folds only)")


class ChecksFailed(RuntimeError):
    """The exported model broke a competition limit or a parity target (message: every broken one)."""


@dataclass
class FinalizeArgs:
    spaces: list[str] | None = None  # None: every space with a study of study_preset
    preset: str | None = None  # training preset (default: the studies' preset)
    study_preset: str | None = None  # the preset the studies ran under (default: base.yaml's default)
    recipe: str = "baseline"  # which of base.yaml's recipes the studies changed and finalize starts from
    data: str | None = None
    storage: str | None = None
    out: str = "final"
    reports: str = "reports"
    prefer_mean: bool = False
    prefer_faster: bool = False  # --prefer faster-if-equivalent
    tta: str = "none"
    ensemble: str = "mean"  # how the members' probabilities are combined (export.ensemble.RULES)
    seeds_per_fold: int = 1
    full_data: bool = False  # train seeds_per_fold models on every sequence instead of the folds
    check_sequences: int = 200
    quantize: str = "fp16"  # the deliverable's precision: fp16 or int8 (dynamic range)
    check_files: tuple[str, ...] = ()  # competition files or folders added to the parity checks
    export: bool = True


def finalize(args: FinalizeArgs) -> dict[str, Any]:
    from ablate.data.cache import Cache
    from ablate.data.drop import check_config
    from ablate.final.compose import compose
    from ablate.final.folds import check_done_folds, check_or_claim, write_json
    from ablate.study.runner import resolve_data

    t0 = time.perf_counter()
    if args.export:  # before hours of training, not after
        _check_export_installed()
        from ablate.export.cases import file_cases

        file_cases([Path(f) for f in args.check_files])
    recipe = compose(args.spaces, args.preset, args.study_preset, args.storage, args.prefer_mean,
                     recipe_name=args.recipe, faster=args.prefer_faster)
    data = Cache(resolve_data(args.data))
    for ch in recipe.choices:
        if ch.fingerprint and ch.fingerprint != data.fingerprint:
            recipe.warnings.append(f"{ch.study} ran on data {ch.fingerprint}, finalize trains on {data.fingerprint}")
    out = Path(args.out)
    summary: dict[str, Any] = {
        "recipe": recipe.recipe_name, "preset": recipe.preset, "study_preset": recipe.study_preset,
        "storage": recipe.storage,
        "config": recipe.config.to_dict(), "choices": [asdict(c) for c in recipe.choices],
        "warnings": recipe.warnings, "versions": versions(PACKAGES + EXPORT_PACKAGES), "git": git_commit(),
        "data": {"fingerprint": data.fingerprint, "cache": str(data.dir), "sequences": len(data),
                 "signs": data.num_classes},
    }
    check_config(recipe.config, data)  # participants to drop: before the folder is claimed
    if args.full_data and recipe.config.early_stopping:
        raise UserError(f"--full-data: the recipe stops early (early_stopping {recipe.config.early_stopping}), "
                        "which needs held-out sequences; all the data leaves none")
    check_or_claim(out, recipe.config, data, {"provenance": summary})
    seeds, rule, full = args.seeds_per_fold, args.ensemble, args.full_data
    check_done_folds(recipe.config, data.num_classes, out, seeds, full)
    print("\n".join(recipe.describe()), file=sys.stderr, flush=True)
    summary["ensemble"] = {"rule": rule, "seeds_per_fold": seeds, "full_data": full,
                           "members": seeds * (1 if full else recipe.config.folds)}
    summary["training"] = _train(recipe.config, data, out, seeds, rule, full)
    failure = None
    if args.export:
        from ablate.export.build import earlier_deliverable, export_and_check
        from ablate.export.convert import ExportError

        try:
            summary["export"] = export_and_check(recipe.config, data, out, args.tta, args.check_sequences,
                                                 [Path(f) for f in args.check_files], seeds=seeds, rule=rule,
                                                 full_data=full, quantize=args.quantize)
        except ExportError as e:  # recorded with the folds' numbers, then reported
            summary["export"] = {"broken": [f"export failed: {e}"], "deliverable": None,
                                 "earlier_deliverable": earlier_deliverable(out)}
            failure = e
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / FINAL_JSON, summary)
    write_final_page(summary, Path(args.reports))
    if failure:
        raise failure
    broken = summary.get("export", {}).get("broken", [])
    if broken:
        earlier = summary["export"].get("earlier_deliverable")
        raise ChecksFailed("; ".join(broken) + f" (this run wrote no model: {earlier or 'there is none in ' + str(out)}; "
                           f"details in {out / FINAL_JSON})")
    return summary


NO_OOF = ("every model was trained on all the data: nothing was held out, so there is no out-of-fold "
          "estimate of its accuracy (finalize without --full-data gives one)")


def _train(config: Any, data: Any, out: Path, seeds: int, rule: str, full: bool) -> dict[str, Any]:
    """Train (or resume) the final models: the folds' or all the data's; their numbers for final.json."""
    from ablate.final.folds import out_of_fold, train_all, train_full

    if full:
        models = train_full(config, data, out, seeds)
        print(f"trained {seeds} model(s) on every training sequence: {NO_OOF}", file=sys.stderr, flush=True)
        return {"full_data": True, "note": NO_OOF, "oof": None,
                "folds": [{"seed": m.seed, "seconds": m.seconds, "resumed": m.resumed} for m in models]}
    folds = train_all(config, data, out, seeds=seeds)
    oof = out_of_fold(config, data, out, seeds, rule)
    per_fold = ", ".join(f"{f['acc']:.4f}" for f in oof["folds"])
    print(f"out-of-fold accuracy per fold: {per_fold}; "
          f"pooled {oof['pooled']:.4f} over {oof['n']} sequences", file=sys.stderr, flush=True)
    return {"folds": [asdict(f) for f in folds], "oof": oof}

