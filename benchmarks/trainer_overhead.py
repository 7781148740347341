"""Trainer overhead: `train_fold` end to end against the bare model step on ready-made tensors.

    python benchmarks/trainer_overhead.py [--epochs 6] [--preset quick] [--data CACHE_OR_DIR] [--threads N]

trainer:   training sequences/s of train_fold (the preset's recipe, baseline augmentations on:
           shift, scale, rotate, hflip), training-phase time only (validation excluded), epochs
           after the first (the first warms up; the resident store is built before it).
bare_step: the same model, loss, optimizer, schedule and precision (the trainer's own step)
           on feature tensors already on the device, of the very shapes the trainer's batches
           had (batch size and padded length of every batch of an epoch), no augmentation.
share:     trainer / bare_step, the fraction of the model's speed that the whole trainer keeps,
           taken epoch by epoch: right after each trainer epoch, one bare pass over that epoch's
           shapes, so that both halves of a ratio meet the same load (this box is shared); the
           median of those ratios. trainer and bare_step are the medians of their own rates.
One process, on the default synthetic set, with --threads intra-op threads (default: torch's,
one per core; `ablate run --workers 2` on 2 cores gives each worker 1, and the issue's own figures
were taken at 1). Where the cores allow (batching.spare_core: at 1 thread on 2 cores), the trainer
makes its batches in a thread ahead of the step; a study's workers on this box do not. The last
line is JSON:
{"trainer": seq/s, "bare_step": seq/s, "share": ...}.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ablate.batching import BucketBatchSampler, spare_core
from ablate.components._random import run_seed
from ablate.config import Config
from ablate.data.cache import Cache
from ablate.data.default import default_cache
from ablate.data.drop import training_items
from ablate.spaces import recipe_config
from ablate.train import EpochStats, bare_steps, train_fold


def shapes(cfg: Config, data: Cache, fold: int, epoch: int) -> list[tuple[int, int]]:
    """(batch size, padded frames) of each training batch of one epoch, as the trainer forms them
    (its items, its sampler and seed: feed.Feed)."""
    idx = training_items(np.flatnonzero(data.folds(cfg.folds, cfg.fold_seed, cfg.fold_kind) != fold), cfg, data, fold)
    sampler = BucketBatchSampler(data.lengths[idx], cfg.batch_size, shuffle=True,
                                 seed=run_seed(cfg.seed, cfg.fold_seed, fold), max_batches=cfg.max_train_batches)
    sampler.epoch = epoch
    return [(len(b), int(min(data.lengths[idx][b].max(), cfg.features.params.get("max_len", 384)))) for b in sampler]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6, help="measured epochs (one more warms up)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--data", default=None, help="a cache (default: the embedded synthetic set)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data = Cache(a.data or default_cache())
    cfg = recipe_config(a.preset).replace(epochs=a.epochs + 1, early_stopping=0)
    rates: list[float] = []
    bares: list[float] = []

    def paired(e: EpochStats) -> None:
        rates.append(e.train_rate)
        if e.epoch:  # not the warm-up epoch
            with torch.random.fork_rng():  # the bare pass seeds its own model: the trainer's draws stay its own
                bares.append(bare_steps(cfg, data.num_classes, shapes(cfg, data, 0, e.epoch)))

    result = train_fold(cfg, data, 0, progress=False, on_epoch=paired)
    trainer, bare = float(np.median(rates[1:])), float(np.median(bares))
    share = float(np.median(np.array(rates[1:]) / np.array(bares)))
    print(f"{result.n_train} training sequences, batch {cfg.batch_size}, {a.preset} preset, device "
          f"{result.device}, precision {result.amp}, {torch.get_num_threads()} threads, batches made "
          f"{'ahead, on a spare core' if spare_core(1) or result.device != 'cpu' else 'in turn'}")
    print(f"train_fold: {trainer:9.1f} sequences/s (median of epochs 2..{a.epochs + 1}: "
          f"{', '.join(f'{r:.0f}' for r in rates[1:])})")
    print(f"bare step:  {bare:9.1f} sequences/s (one pass after each: {', '.join(f'{r:.0f}' for r in bares)})")
    print(f"share: {share:.2f} (median of the epochs' ratios)")
    print(json.dumps({"trainer": round(trainer, 1), "bare_step": round(bare, 1), "share": round(share, 3)}))


if __name__ == "__main__":
    main()
