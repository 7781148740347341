"""Size and latency of the exported baseline-size ensemble: PyTorch eager vs TFLite fp32 / fp16 /
int8 (dynamic range), one and two threads, with and without hflip test-time augmentation.

    python benchmarks/export_latency.py [--preset full] [--recipe baseline] [--folds 5] [--n 100] [--final DIR]

By default the models are the baseline recipe's size (preset `full`: 1-block transformer, width 512,
16 heads, sub-center ArcFace over 250 classes) with random weights: size and speed do not depend
on the weights. `--final DIR` uses the folds trained by `ablate finalize --out DIR` instead, and then
also reports out-of-fold accuracy with and without TTA. Sequences are a random sample of the
data's (default: the embedded synthetic set), so latency is over a realistic mix of lengths.
Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ablate.data.cache import Cache
from ablate.export import cases as cs
from ablate.export import check, convert
from ablate.export.build import output_map, torch_reference
from ablate.export.ensemble import Ensemble
from ablate.final.folds import load_folds
from ablate.parts import build_parts
from ablate.study.runner import resolve_data
from ablate.spaces import recipe_config

OUT = Path(__file__).parent / "out" / "export"


def eager_latency(module: torch.nn.Module, seqs: list[np.ndarray], threads: int) -> float:
    torch.set_num_threads(threads)
    run = torch_reference(module)
    for s in seqs[:3]:
        run(s)
    times = []
    for s in seqs:
        t = time.perf_counter()
        run(s)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.fmean(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full", help="model sizes from this preset (default: the baseline's)")
    ap.add_argument("--recipe", default="baseline", help="which of base.yaml's recipes (baseline, winner)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n", type=int, default=100, help="sequences timed")
    ap.add_argument("--data", default=None, help="data whose lengths are used (default: the embedded set)")
    ap.add_argument("--final", default=None, help="an `ablate finalize --out` folder: use its trained folds")
    ap.add_argument("--tta", nargs="+", default=["none", "hflip"], choices=["none", "hflip"])
    a = ap.parse_args()
    data = Cache(resolve_data(a.data))
    if a.final:
        cfg_dict = json.loads((Path(a.final) / "recipe.json").read_text())["config"]
        from ablate.config import Config

        cfg = Config.from_dict(cfg_dict)
        folds = [p for fold in load_folds(cfg, data.num_classes, Path(a.final)) for p in fold]
        _, index, _ = output_map(data)
    else:
        cfg = recipe_config(a.preset, recipe=a.recipe)
        torch.manual_seed(0)
        folds = [build_parts(cfg, 250) for _ in range(a.folds)]
        for p in folds:
            p.model.eval()
            p.head.eval()
        index = None
    seqs = cs.realistic(data, a.n)
    longest = cs.tile(cs.median_sequence(data), cs.CROP)
    print(f"{len(folds)} folds of {cfg.model.name} {cfg.model.params}; {len(seqs)} sequences, median length "
          f"{statistics.median(len(s) for s in seqs):.0f}", flush=True)
    rows = []
    for tta in a.tta:
        ens = Ensemble(folds, tta=tta, out_index=index).eval()
        d = OUT / f"{a.recipe + '-' + a.preset if not a.final else 'final'}-{tta}"
        d.mkdir(parents=True, exist_ok=True)
        log = d / "convert.log"
        t0 = time.perf_counter()
        convert.to_tflite_files(ens, d, convert.PRECISIONS, log)
        conv_s = time.perf_counter() - t0
        n_params = sum(p.numel() for m in (ens.models, ens.heads) for p in m.parameters())
        ref = torch_reference(ens)
        named = [(str(i), s) for i, s in enumerate(seqs)]
        for threads in (1, 2):
            rows.append({"tta": tta, "runtime": "PyTorch eager", "threads": threads,
                         "mean_ms": eager_latency(ens, seqs, threads), "size_mb": n_params * 4 / 1e6})  # MB = 10^6 bytes, as check.file_mb
        for variant in convert.PRECISIONS:
            path = d / f"model_{variant}.tflite"
            par = check.parity(named, ref, check.TFLiteModel(path, 1))
            for threads in (1, 2):
                lat = check.latency(check.TFLiteModel(path, threads), seqs, longest, threads)
                rows.append({"tta": tta, "runtime": f"TFLite {variant}", "threads": threads, "mean_ms": lat.mean_ms,
                             "p95_ms": lat.p95_ms, "ms_at_384": lat.max_len_ms, "size_mb": check.file_mb(path),
                             "max_abs_vs_torch": par.max_abs, "argmax_agreement": par.argmax_agreement,
                             "convert_s": conv_s})
        print(f"tta {tta}: converted in {conv_s:.0f}s", flush=True)
    if a.final:
        from ablate.export.build import oof_accuracy

        for tta in a.tta:
            acc = oof_accuracy(cfg, data, folds, tta)
            print(f"out-of-fold accuracy, tta {tta}: {acc:.4f}")
            rows.append({"tta": tta, "runtime": "out-of-fold accuracy (PyTorch)", "accuracy": acc})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(rows, indent=1))
    print("| tta | runtime | threads | mean ms/seq | p95 ms | ms at 384 frames | size MB | max abs vs torch | argmax agree |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda r, k, spec: format(r[k], spec) if k in r else "-"  # noqa: E731
    for r in rows:
        if "accuracy" in r:
            continue
        print(f"| {r['tta']} | {r['runtime']} | {r['threads']} | {r['mean_ms']:.2f} | {f(r, 'p95_ms', '.2f')} | "
              f"{f(r, 'ms_at_384', '.1f')} | {r['size_mb']:.1f} | {f(r, 'max_abs_vs_torch', '.1e')} | "
              f"{f(r, 'argmax_agreement', '.3f')} |")


if __name__ == "__main__":
    main()
