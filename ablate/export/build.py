"""Export the trained folds as one competition model, then check it: parity, size, latency.

    out/export/model.onnx, saved_model/, model_fp32.tflite, model_fp16.tflite (model_int8.tflite), convert.log
    out/model.tflite                    the deliverable (fp16, or int8 with quantize="int8"), only when
                                        every check passed
    out/model_fp32.tflite               its fp32 twin
    out/sign_to_prediction_index_map.json, out/recipe.json   beside the model
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from ablate.config import Config
from ablate.data.cache import Cache
from ablate.data.synth import SIGN_NAMES
from ablate.export import cases as cs
from ablate.export import check, convert
from ablate.export.ensemble import Ensemble, competition_index
from ablate.files import atomic_write
from ablate.final.folds import load_folds, write_json

COMPETITION_MAP = {name: i for i, name in enumerate(SIGN_NAMES)}
DELIVERABLE = "model.tflite"
DELIVERED = "deliverable.json"  # when, and from what, model.tflite was written


def earlier_deliverable(out: Path) -> str | None:
    """A sentence naming the deliverable an earlier run left in `out` (kept when this run's failed)."""
    if not (out / DELIVERABLE).is_file():
        return None
    try:
        when = json.loads((out / DELIVERED).read_text()).get("written", "an earlier run")
    except (OSError, ValueError):
        when = "an earlier run"
    return f"{out / DELIVERABLE} is still the one written by the run of {when}"


def output_map(data: Cache) -> tuple[dict[str, int], list[int] | None, str | None]:
    """The exported output's sign map, the slot -> class index, and a note when it is not plainly the
    competition's. A map with signs the competition lacks gives a non-competition output size."""
    try:
        index = competition_index(data.sign_map, COMPETITION_MAP)
    except ValueError as e:
        return data.sign_map, None, f"the data's sign map is not the competition's ({e})"
    if index is not None:
        return COMPETITION_MAP, index, (f"the data has {data.num_classes} of the competition's 250 signs: the other "
                                        f"{250 - data.num_classes} outputs are always 0")
    return COMPETITION_MAP, None, None


def torch_reference(module: torch.nn.Module) -> Any:
    def run(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))).numpy()
    return run


def oof_accuracy(config: Config, data: Cache, folds: list[list[Any]], tta: str, rule: str = "mean") -> float:
    """Pooled out-of-fold accuracy of each fold's models (its seeds combined by `rule`) as exported
    (fp32, with TTA if asked), in PyTorch."""
    fold_of = data.folds(config.folds, config.fold_seed, config.fold_kind)
    hits = 0
    for k, parts in enumerate(folds):
        run = torch_reference(Ensemble(parts, tta=tta, rule=rule).eval())
        for i in np.flatnonzero(fold_of == k):
            hits += int(np.argmax(run(np.array(data.sequence(int(i))))) == data.labels[i])
    return hits / len(data)


def export_and_check(config: Config, data: Cache, out: Path, tta: str = "none", n_check: int = 200,
                     check_files: Sequence[Path] = (), log: TextIO | None = None, seeds: int = 1,
                     rule: str = "mean", full_data: bool = False, quantize: str = "fp16") -> dict[str, Any]:
    """Build, convert and check; returns the numbers for final.json (with 'broken': [...]).
    quantize: the deliverable's precision, fp16 or int8 (dynamic range; then also its accuracy
    against fp32 on held-out sequences, per fold, unless full_data);
    check_files: competition landmark files (or folders of them) added to the parity checks;
    seeds: the models per fold; rule: how the members' probabilities are combined (ensemble.RULES);
    full_data: the members are the models trained on all the data (no out-of-fold accuracy)."""
    log = log or sys.stderr
    real = cs.file_cases(check_files)  # read first: a bad file is reported before any conversion
    folds = load_folds(config, data.num_classes, out, seeds, full_data)  # and bad weights before an earlier deliverable is touched
    exp = out / "export"
    exp.mkdir(parents=True, exist_ok=True)
    conv_log = exp / "convert.log"
    conv_log.write_text("")
    sign_map, out_index, map_warning = output_map(data)
    ensemble = Ensemble([p for fold in folds for p in fold], tta=tta, out_index=out_index, rule=rule).eval()
    times: dict[str, float] = {}

    def step(name: str, fn: Any, *a: Any) -> Any:
        print(f"export: {name} ...", file=log, flush=True)
        t = time.perf_counter()
        r = fn(*a)
        times[name] = round(time.perf_counter() - t, 1)
        return r

    variants = ("fp32", "fp16", "int8") if quantize == "int8" else ("fp32", "fp16")
    convert.to_tflite_files(ensemble, exp, variants, conv_log, step)

    print("export: checking parity, size and latency ...", file=log, flush=True)
    median = cs.median_sequence(data)
    crop = int(config.features.params.get("max_len", cs.CROP))
    edge = cs.edge_cases(median, crop)
    tests = edge + real + cs.data_cases(data, n_check)
    ref = torch_reference(ensemble)
    try:
        models = {v: check.TFLiteModel(exp / f"model_{v}.tflite", threads=1) for v in variants}
    except ValueError as e:
        raise convert.ExportError(str(e)) from e
    for name, frames in edge:  # every output must be a finite vector of the right size
        y = models[quantize](frames)
        if y.shape != (len(sign_map),) or not np.all(np.isfinite(y)):
            raise convert.ExportError(f"{name}: output shape {y.shape} or non-finite values")
    par = {v: check.parity(tests, ref, m) for v, m in models.items()}
    realistic = cs.realistic(data)
    longest = cs.tile(median, crop)
    lat = {f"{quantize}_{n}t": check.latency(check.TFLiteModel(exp / f"model_{quantize}.tflite", threads=n), realistic,
                                             longest, n) for n in (1, 2)}
    for v in variants:
        lat.setdefault(f"{v}_1t", check.latency(models[v], realistic, longest, 1))
    sizes = {v: check.file_mb(exp / f"model_{v}.tflite") for v in variants}
    broken = check.verdicts(par["fp32"], par["fp16"], sizes[quantize], lat[f"{quantize}_1t"], DELIVERABLE,
                            par.get("int8"))
    if len(sign_map) != len(COMPETITION_MAP):
        broken.append(f"outputs: {len(sign_map)} classes, not the competition's {len(COMPETITION_MAP)} ({map_warning})")
    int8 = None
    if quantize == "int8":  # before anything is written: a failure here leaves the earlier deliverable
        from ablate.export.quantized import oof_int8

        int8 = {"note": "trained on all the data: no held-out sequences"} if full_data else \
            oof_int8(config, data, folds, rule, tta, exp / "int8_folds", log)
    if not broken:  # an earlier run's deliverable is replaced only by one that passes every check
        for src, dst in ((f"model_{quantize}.tflite", DELIVERABLE), ("model_fp32.tflite", "model_fp32.tflite")):
            atomic_write(out / dst, (exp / src).read_bytes())
        write_json(out / "sign_to_prediction_index_map.json", sign_map)
        write_json(out / DELIVERED, {"written": time.strftime("%Y-%m-%d %H:%M:%S %z"), "tta": tta,
                                     "ensemble": rule, "seeds_per_fold": seeds, "full_data": full_data,
                                     "precision": quantize,
                                     "config": config.to_dict()})
    accuracy = None
    if tta != "none" and not full_data:  # side by side, both fp32 in PyTorch (the training's own figure may be bf16)
        accuracy = {t: oof_accuracy(config, data, folds, t, rule) for t in ("none", tta)}
    return {
        "tta": tta,
        "ensemble": rule,
        "members": sum(len(f) for f in folds) * (2 if tta == "hflip" else 1),
        "crop": crop,
        "outputs": len(sign_map),
        "warnings": [map_warning] if map_warning else [],
        "seconds": times,
        "precision": quantize,
        "parity": {v: asdict(p) for v, p in par.items()} | {"tests": len(tests), "files": [n for n, _ in real]},
        "size_mb": sizes | {"limit": check.SIZE_LIMIT_MB},
        "int8_oof": int8,
        "latency_ms": {k: asdict(v) for k, v in lat.items()} | {"limit": check.LATENCY_LIMIT_MS},
        "targets": {"fp32_max_abs": check.FP32_MAX_ABS, "fp16_agreement": check.FP16_MIN_AGREEMENT,
                    "int8_agreement": check.INT8_MIN_AGREEMENT,
                    "fp16_sequences": check.FP16_MIN_SEQUENCES},
        "oof_accuracy_by_tta": accuracy,
        "deliverable": str(out / DELIVERABLE) if not broken else None,
        "earlier_deliverable": earlier_deliverable(out) if broken else None,
        "broken": broken,
    }
