"""Training throughput of the baseline recipe on a GPU: trainer, bare step, memory, full-data epoch.

    python benchmarks/gpu_throughput.py [--reps 4] [--epochs 3] [--cache DIR]
    python benchmarks/gpu_throughput.py --small      # minutes on a CPU: keeps the script alive in CI
    python benchmarks/gpu_throughput.py --compile --optimizer lookahead --profile 40 --out DIR
    python benchmarks/gpu_throughput.py --batch 256   # another batch size (same learning rate)
    python benchmarks/gpu_throughput.py --eager       # cuda_graphs: false (the model's pass op by op)
    python benchmarks/gpu_throughput.py --group 1024  # the input path makes 1,024 items at a time on CUDA

Variants: --compile (the recipe's `compile: true`: the model through
torch.compile); --eager (`cuda_graphs: false`: the model's training pass launched op by op, not
replayed as CUDA graphs); --optimizer lookahead (RAdam + Lookahead from torch.optim and pytorch-optimizer,
multi-tensor on CUDA, with Ranger's k and alpha, instead of pytorch-ranger's per-tensor Ranger).
--profile N profiles 2 x N bare steps (a warm-up pass and a timed one) and writes their kernel
time, kernel launches and the top operators to --out.

The baseline recipe (`full` preset: seed828 features, 1-block transformer of width 512 with 16
heads, sub-center ArcFace, Ranger, batch 64, baseline augmentations, AMP auto) on a synthetic set
written straight into a cache (`ablate data synth --cache-only`: 250 signs, 21 participants,
--reps sequences per participant and sign, 4 by default; the competition has about 18). Measured on fold 0:
- trainer: training sequences/s of train_fold, median over the epochs after the first (and the
  fold's record of its CUDA graphs: "whole steps" where each step ran as one graph);
- bare_step: the trainer's own step on ready-made device tensors of the same batch shapes;
- feed: training sequences/s of the input path alone (landmarks -> augmentations -> features,
  in its batch thread on CUDA), one epoch, no model: the most the trainer can reach;
- the device's peak memory, whether the landmarks were resident, and the same batches prepared
  on the CPU and on the device (largest difference of the features: the draws are device-free);
- the time of one training epoch projected to the full competition set (94,477 sequences, 4/5
  of them in training), from the trainer's rate.
The last line is JSON with those figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ablate.batching import BucketBatchSampler
from ablate.config import Component
from ablate.data.cache import Cache, ablate_home
from ablate.data.resident import LandmarkStore, store_for
from ablate.data.synth import SynthConfig
from ablate.data.synth_cache import synth_cache
from ablate.device import resolve_device
from ablate import feed as feed_module
from ablate.feed import Feed
from ablate.parts import build_augmentations, build_parts
from ablate.spaces import recipe_config
from ablate.train import bare_steps, train_fold

FULL_SEQUENCES = 94_477


def _data(a: argparse.Namespace) -> Cache:
    cfg = SynthConfig(n_signs=a.signs, n_participants=a.participants, reps=a.reps)
    where = Path(a.cache or ablate_home() / "bench" / f"synth-{a.signs}x{a.participants}x{a.reps}")
    try:
        return Cache(where)
    except Exception:  # not built yet (or damaged): build it
        t = time.perf_counter()
        r = synth_cache(where, cfg, workers=a.workers)
        print(f"built {where}: {r.read} sequences, {r.frames_read} frames in {time.perf_counter() - t:.0f}s", flush=True)
        return Cache(where)


def _agreement(cfg, data: Cache, device: torch.device) -> float:
    """Largest |difference| of the augmented features of a few batches made on the CPU and on `device`."""
    if device.type == "cpu":
        return 0.0
    parts, augs = build_parts(cfg, data.num_classes), build_augmentations(cfg)
    layout = parts.features.layout()
    stores = {"cpu": LandmarkStore(data, layout, torch.device("cpu")), "device": store_for(data, layout, device)}
    sampler = BucketBatchSampler(data.lengths, cfg.batch_size, shuffle=True, seed=1)
    worst = 0.0
    for items in sampler.batches()[:3]:
        outs = []
        for store in stores.values():
            raw, _ = store.batch(items, (0, 0, 0, 0))
            with torch.no_grad():
                outs.append(parts.features.to(store.device).batched(augs(raw))[0].cpu())
        worst = max(worst, float((outs[0] - outs[1]).abs().max()))
    return worst


def _feed_rate(cfg, data: Cache) -> float:
    """Sequences/s of fold 0's training batches made by the trainer's Feed alone (epoch 1, after a
    warm-up epoch 0), waiting for the device at the end."""
    folds = data.folds(cfg.folds, cfg.fold_seed, cfg.fold_kind)
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)[: cfg.batch_size]
    parts, device = build_parts(cfg, data.num_classes), resolve_device(cfg.device)
    feed = Feed(cfg, data, 0, train_idx, val_idx, parts.features, build_augmentations(cfg), device, 1)
    rate = 0.0
    for epoch in range(2):
        t, n, last = time.perf_counter(), 0, None
        for last, _, _ in feed.train(epoch):
            n += len(last)
        if last is not None:
            float(last.sum())  # wait for the device
        rate = n / (time.perf_counter() - t)
    return rate


def _variant(cfg, a: argparse.Namespace):
    if a.batch:
        cfg = cfg.replace(batch_size=a.batch)
    if a.compile:
        cfg = cfg.replace(compile=True)
    if a.eager:
        cfg = cfg.replace(cuda_graphs=False)
    if a.optimizer:
        old = cfg.optimizer.params
        params = {"lr": old.get("lr", 1e-4), "weight_decay": old.get("weight_decay", 0.0)}
        if a.optimizer == "lookahead":
            params |= {"k": old.get("k", 6), "alpha": old.get("alpha", 0.5)}  # Ranger's defaults
        cfg = cfg.replace(optimizer=Component(a.optimizer, params))
    return cfg


def _profile(cfg, num_classes: int, shapes: list[tuple[int, int]], out: Path) -> dict:
    """Kernel time and launches over the bare steps of `shapes`, run twice under the profiler (the
    warm-up pass and the timed one: 2 x len(shapes) steps); the wall time includes building the
    model and the batches. The operators' table is written to `out`."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    bare_steps(cfg, num_classes, shapes, repeats=1)  # warm (and compiled) first
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        bare_steps(cfg, num_classes, shapes, repeats=1)
    wall = time.perf_counter() - t
    events = prof.key_averages()
    device = [e for e in prof.events() if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    kernels = sum(e.time_range.elapsed_us() for e in device) / 1e6  # the kernels and copies themselves, us -> s
    out.mkdir(parents=True, exist_ok=True)
    by = "self_device_time_total" if kernels else "self_cpu_time_total"
    (out / "profile.txt").write_text(events.table(sort_by=by, row_limit=40))
    launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel")))
    return {"profiled_steps": 2 * len(shapes), "kernel_seconds": round(kernels, 3), "wall_seconds": round(wall, 3),
            "kernel_launches": launches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signs", type=int, default=250)
    ap.add_argument("--participants", type=int, default=21)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="synthesis processes (default: all cores)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--small", action="store_true", help="tiny data and model, for a CPU")
    ap.add_argument("--compile", action="store_true", help="the recipe's compile: true")
    ap.add_argument("--eager", action="store_true", help="cuda_graphs: false (the model's pass launched op by op)")
    ap.add_argument("--group", type=int, default=0, help="items the input path makes at once on CUDA "
                    "(default: feed.GROUP_ITEMS)")
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: the recipe's, 64)")
    ap.add_argument("--optimizer", default=None, help="another registered optimizer (lookahead: see above)")
    ap.add_argument("--profile", type=int, default=0, help="profile the bare steps of this many batches (twice: warm-up and timed)")
    ap.add_argument("--out", default="benchmarks/out/gpu_throughput", help="where --profile writes")
    a = ap.parse_args()
    if a.small:
        a.signs, a.participants, a.reps, a.epochs = 12, 5, 2, 1
    if a.group:
        feed_module.GROUP_ITEMS = a.group
    data = _data(a)
    cfg = recipe_config("full").replace(epochs=a.epochs + 1, early_stopping=0)
    if a.small:
        cfg = cfg.replace(model=Component("transformer", {"width": 32, "heads": 4}), batch_size=16)
    cfg = _variant(cfg, a)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates: list[float] = []
    r = train_fold(cfg, data, 0, progress=False, on_epoch=lambda e: rates.append(e.train_rate))
    trainer = float(np.median(rates[1:]))
    idx = np.flatnonzero(data.folds(cfg.folds, cfg.fold_seed, cfg.fold_kind) != 0)
    sampler = BucketBatchSampler(data.lengths[idx], cfg.batch_size, shuffle=True, seed=cfg.seed)
    shapes = [(len(b), int(min(data.lengths[idx][b].max(), 384))) for b in sampler.batches()[:300]]
    bare = bare_steps(cfg, data.num_classes, shapes, repeats=1)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0  # training's
    feed = _feed_rate(cfg, data)
    store = store_for(data, build_parts(cfg, data.num_classes).features.layout(), device)
    out = {
        "device": r.device, "gpu": r.gpu, "amp": r.amp, "sequences": len(data), "train_sequences": r.n_train,
        "trainer": round(trainer, 1), "bare_step": round(bare, 1), "share": round(trainer / bare, 3),
        "feed": round(feed, 1), "batch_size": cfg.batch_size,
        "epoch_rates": [round(x, 1) for x in rates], "peak_gpu_memory_gib": round(peak, 2),
        "resident": store.resident, "store_gib": round(store.bytes / 2**30, 3),
        "cpu_vs_device_max_diff": _agreement(cfg, data, device),
        "full_data_epoch_seconds": round(FULL_SEQUENCES * 0.8 / trainer, 1),
        "compile": cfg.compile, "cuda_graphs": cfg.cuda_graphs, "graphs": r.graphs, "group_items": feed_module.GROUP_ITEMS, "optimizer": cfg.optimizer.name, "first_epoch_seconds": round(r.epochs[0].seconds, 1),
    }
    if a.profile:
        out |= _profile(cfg, data.num_classes, shapes[:a.profile], Path(a.out))
    print(f"{r.n_train} training sequences on {r.device} {r.gpu} ({r.amp}); trainer {trainer:.0f}/s, "
          f"bare step {bare:.0f}/s, input path alone {feed:.0f}/s; a full-data epoch ~{out['full_data_epoch_seconds']}s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
