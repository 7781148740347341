"""Trainer overhead: `train_fold` versus a bare PyTorch loop over the same model and tensors.

    python benchmarks/trainer_overhead.py [--width 512 --heads 16] [--epochs 3]

Both train the baseline transformer + sub-center ArcFace + Ranger at batch 64 on the same
pre-built feature tensors and the same length-bucketed batches (no augmentation, so the features
are fixed); the bare loop is forward, loss, backward, clip, step, schedule and nothing else. Both
run in this process, one after the other, on the default synthetic set. Reported: training
samples per second of each (median epoch) and the trainer's overhead in percent.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ablate.batching import BucketBatchSampler, SequenceDataset, pad_collate
from ablate.components import OPTIMIZERS, SCHEDULES
from ablate.config import Component, Config
from ablate.spaces import recipe_config
from ablate.data.cache import Cache
from ablate.data.default import default_cache
from ablate.parts import build_parts
from ablate.train import train_fold


def bare_loop(cfg: Config, data: Cache, fold: int, epochs: int) -> list[float]:
    """Samples per second per epoch of the plainest loop over pre-built padded batches."""
    torch.manual_seed(cfg.seed)
    parts = build_parts(cfg, data.num_classes)
    idx = np.flatnonzero(data.folds(cfg.folds, cfg.fold_seed) != fold)
    ds = SequenceDataset(data, idx, parts.features)
    items = [ds[(i, 0)] for i in range(len(ds))]
    sampler = BucketBatchSampler(data.lengths[idx], cfg.batch_size, shuffle=True, seed=cfg.seed)
    params = list(parts.model.parameters()) + list(parts.head.parameters())
    opt = OPTIMIZERS.build(cfg.optimizer.name, cfg.optimizer.params, weights=params)
    sched = SCHEDULES.build(cfg.schedule.name, cfg.schedule.params, optimizer=opt, epochs=epochs,
                            steps_per_epoch=len(sampler))
    rates = []
    for epoch in range(epochs):
        sampler.epoch = epoch
        batches = [pad_collate([items[i] for i, _ in b]) for b in sampler]  # built before timing
        parts.model.train()
        parts.head.train()
        t = time.perf_counter()
        for x, mask, y in batches:
            opt.zero_grad(set_to_none=True)
            loss = parts.head(parts.model(x, mask), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
        rates.append(len(idx) / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    data = Cache(default_cache())
    cfg = recipe_config("full").replace(model=Component("transformer", {"width": a.width, "heads": a.heads}),
                                        augmentations=(), epochs=a.epochs, workers=0, amp="off", batch_size=64)
    bare = bare_loop(cfg, data, 0, a.epochs)
    per_epoch = []
    r = train_fold(cfg, data, 0, on_epoch=lambda e: per_epoch.append(e))
    # train_fold's own per-epoch training rate is not exposed; use its overall training rate
    ours = r.samples_per_sec
    print(f"threads {torch.get_num_threads()}, {r.n_train} training sequences, batch 64, width {a.width}, heads {a.heads}")
    print(f"bare loop:  {np.median(bare):8.1f} samples/s (epochs: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"train_fold: {ours:8.1f} samples/s (all epochs)")
    print(f"overhead: {100 * (np.median(bare) / ours - 1):+.1f}%")


if __name__ == "__main__":
    main()
