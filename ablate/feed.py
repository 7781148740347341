"""Training and validation batches on the training device, for one fold of `train_fold`.

cache positions -> carried landmarks from the resident store (data/resident.py) -> augmentations
(components/augmentations.py) -> features (features.batched), whole batches at a time. On CUDA
the training batches are made GROUP_ITEMS items at a time, one thread ahead
(batching.prefetched). Validation features are made once per fold when they fit in
VAL_BUDGET_BYTES, else on every pass.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ablate.batching import BucketBatchSampler, prefetched
from ablate.components._random import run_seed
from ablate.config import Config
from ablate.data.cache import Cache
from ablate.data.resident import store_for

# Recorded with each study: numbers from another version of the trainer (other augmentation draws,
# `speed` by nearest frame; "batched-2": model init and batch order seeded per fold and repeat;
# "batched-3": on CUDA, batches made GROUP_ITEMS at a time and cut to their own longest clip, and
# the multi-tensor Ranger; CPU numbers as with batched-2) are not comparable, so a study is not
# resumed across a change of it.
DATA_PATH = "batched-3"
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x [B, T, F], mask [B, T], labels [B], on the device
VAL_BUDGET_BYTES = 2 << 30  # validation features are kept for the fold when they fit in this
# On CUDA, training batches are made this many items at a time and then split into the sampler's
# batches: the input path's cost is mostly per batch (kernel launches, host work), measured on an
# H100 (2026-11-26) at 10,000 sequences/s in batches of 64 and 48,000/s in batches of 256. An
# item's numbers do not depend on its batch (per-item draws and normalisation), so only rounding
# differs; on the CPU each batch is still made alone, so CPU runs keep their exact numbers.
GROUP_ITEMS = 256


class Feed:
    """Batches on the training device: cache positions -> carried landmarks (resident) ->
    augmentations -> features, whole batches at a time. Validation features are made once."""

    def __init__(self, config: Config, data: Cache, fold: int, train_idx: np.ndarray, val_idx: np.ndarray,
                 features: torch.nn.Module, augs: Any, device: torch.device, sharing: int) -> None:
        self.features = copy.deepcopy(features).to(device)  # the parts keep theirs, on the host
        self.store = store_for(data, self.features.layout(), device, sharing)
        self.augs, self.train_idx, self.val_idx = augs, train_idx, val_idx
        self.key = (config.seed, config.fold_seed, fold)
        self.group = max(1, GROUP_ITEMS // config.batch_size) if device.type == "cuda" else 1  # batches made at once
        self.train_sampler = BucketBatchSampler(data.lengths[train_idx], config.batch_size, shuffle=True,
                                                seed=run_seed(config.seed, config.fold_seed, fold),
                                                max_batches=config.max_train_batches)
        self.val_sampler = BucketBatchSampler(data.lengths[val_idx], config.batch_size, shuffle=False)
        out_frames = getattr(features, "out_frames", None)  # the frames the features give each clip
        lengths = data.lengths[val_idx]
        frames = int(out_frames(lengths).sum()) if out_frames else int(lengths.sum())
        keep = frames * getattr(features, "out_dim", 0) * 4 <= VAL_BUDGET_BYTES
        self._val = list(self._batches(self.val_idx, self.val_sampler, None)) if keep else None

    @torch.no_grad()
    def _batches(self, idx: np.ndarray, sampler: BucketBatchSampler, epoch: int | None) -> Iterator[Batch]:
        """The sampler's batches in order; training batches made `group` at a time."""
        key = None if epoch is None else (*self.key, epoch)
        batches = list(sampler)
        step = self.group if epoch is not None else 1
        for g in range(0, len(batches), step):
            chunk = batches[g : g + step]
            raw, y = self.store.batch(idx[np.concatenate(chunk)], key)
            if epoch is not None:
                raw = self.augs(raw)
            x, mask = self.features.batched(raw)
            yield from _split(x, mask, y, [len(b) for b in chunk])

    def train(self, epoch: int) -> Iterator[Batch]:
        self.train_sampler.epoch = epoch
        batches = self._batches(self.train_idx, self.train_sampler, epoch)
        return prefetched(batches, self.store.device) if self.store.device.type == "cuda" else batches

    def val(self) -> Iterable[Batch]:
        return self._val if self._val is not None else self._batches(self.val_idx, self.val_sampler, None)


def _split(x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> Iterator[Batch]:
    """Batches of `sizes` items from one made together, each cut to its own longest item's frames
    (made alone, a batch keeps its frames from before `speed` or `frame_drop`: more padding).
    Knowing those frames waits for the device once."""
    if len(sizes) == 1:
        yield x, mask, y
        return
    frames = mask.sum(dim=1).cpu()
    start = 0
    for n in sizes:
        rows = slice(start, start + n)
        t = max(int(frames[rows].max()), 1)
        yield x[rows, :t], mask[rows, :t], y[rows]
        start += n
