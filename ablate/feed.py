"""Training and validation batches on the training device, for one fold of `train_fold`.

cache positions -> carried landmarks from the resident store (data/resident.py) -> augmentations
(components/augmentations.py) -> features (features.batched), whole batches at a time. On CUDA
the training batches are made GROUP_ITEMS items at a time, in a thread ahead of the step
(batching.prefetched); on the CPU one at a time, in such a thread where the cores allow
(batching.spare_core; 2-core box, one process, quick preset, 1 thread: share of the bare step
0.89-0.98 against 0.80-0.82 made in turn, 2026-11-27), else in turn. Validation features are
made once per fold when they fit in VAL_BUDGET_BYTES, else on every pass.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ablate.batching import BucketBatchSampler, prefetched, spare_core
from ablate.components._random import run_seed
from ablate.config import Config
from ablate.data.cache import Cache
from ablate.data.resident import store_for

# Recorded with each study: numbers from another version of the trainer (other augmentation draws,
# `speed` by nearest frame; "batched-2": model init and batch order seeded per fold and repeat;
# "batched-3": on CUDA, batches made GROUP_ITEMS at a time and cut to their own longest clip, and
# the multi-tensor Ranger; CPU numbers as with batched-2) are not comparable, so a study is not
# resumed across a change of it. A change of rounding only does not change it (attention by
# PyTorch's fused kernel, batches made in pieces on the CPU, numpy's square root: the default demo
# gave every arm the same accuracy on every fold and epoch as before them; on CUDA, which is not
# reproducible without `deterministic`, the model's pass in CUDA graphs and groups of 1,024).
DATA_PATH = "batched-3"
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x [B, T, F], mask [B, T], labels [B], on the device
VAL_BUDGET_BYTES = 2 << 30  # validation features are kept for the fold when they fit in this
# On CUDA, training batches are made this many items at a time and then split into the sampler's
# batches: the input path's cost is mostly per batch (kernel launches, host work), measured on an
# H100 (2026-11-26) at 10,000 sequences/s in batches of 64 and 48,000/s in batches of 256; with
# the model in CUDA graphs, groups of 256 / 512 / 1,024 gave 39,000 / 43,000 / 69,000/s alone and
# a trainer of 10,968 / 11,981 / 13,300/s (the same H100, one call; peak memory 5.9 -> 8.8 GiB).
# An item's numbers do not depend on its group (per-item draws and normalisation), so only
# rounding differs; on the CPU each batch is made alone (or in pieces, below).
GROUP_ITEMS = 1024
# On the CPU, a batch whose padding would cost more than making it in two pieces is made in two
# (its shorter and its longer items, each padded to its own longest clip) and put together again:
# the input path's cost there grows with padded frames, and one long clip can pad a whole batch
# (the default set: 12 clips of 260-539 frames padded 20 of 54-69 to 384, and that batch took half
# of an epoch's input time). A piece costs about this many padded frames more than its frames, measured
# here (2026-11-26, quick preset, 1 thread: about 6 ms a batch of 32 x 20 frames, 4 ms per 1,000
# frames more).
PIECE_FRAMES = 1500


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
        self.pieced = device.type == "cpu"  # on a GPU a piece's cost is per batch (launches): no pieces
        self.ahead = device.type == "cuda" or spare_core(sharing)  # batches made in a thread, ahead of the step
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
    def _batches(self, idx: np.ndarray, sampler: BucketBatchSampler, epoch: int | None) -> Generator[Batch, None, None]:
        """The sampler's batches in order; training batches made `group` at a time."""
        key = None if epoch is None else (*self.key, epoch)
        batches = list(sampler)
        step = self.group if epoch is not None else 1
        for g in range(0, len(batches), step):
            chunk = batches[g : g + step]
            if len(chunk) == 1 and self.pieced:
                yield self._pieced(idx[chunk[0]], key)
            else:
                yield from _split(*self._made(idx[np.concatenate(chunk)], key), [len(b) for b in chunk])

    def _made(self, items: np.ndarray, key: tuple[int, ...] | None) -> Batch:
        """The batch of cache indices `items`, made together: padded to its longest clip."""
        raw, y = self.store.batch(items, key)
        if key is not None:
            raw = self.augs(raw)
        x, mask = self.features.batched(raw)
        return x, mask, y

    def _pieced(self, items: np.ndarray, key: tuple[int, ...] | None) -> Batch:
        """The batch of `items`, made in the pieces `pieces` picks and put together: the same items,
        labels, masks and numbers as `_made` gives (every item's are its own: keyed draws, its own
        normalisation), padded to the longest piece; with `speed`, which pads a batch made whole to
        its slowest draw, that can be fewer frames of padding."""
        rows = pieces(self.store.lengths[items])
        if len(rows) == 1:
            return self._made(items, key)
        made = [self._made(items[r], key) for r in rows]
        x0, m0, y0 = made[0]
        frames = max(m.shape[1] for _, m, _ in made)
        x = x0.new_zeros(len(items), frames, x0.shape[2])
        mask, y = m0.new_zeros(len(items), frames), y0.new_empty(len(items))
        for r, (xp, mp, yp) in zip(rows, made):
            at = torch.from_numpy(r).to(x.device)
            x[at, : xp.shape[1]], mask[at, : mp.shape[1]], y[at] = xp, mp, yp
        return x, mask, y

    def train(self, epoch: int) -> Generator[Batch, None, None]:
        self.train_sampler.epoch = epoch
        batches = self._batches(self.train_idx, self.train_sampler, epoch)
        return prefetched(batches, self.store.device) if self.ahead else batches

    def val(self) -> Iterable[Batch]:
        return self._val if self._val is not None else self._batches(self.val_idx, self.val_sampler, None)


def pieces(lengths: np.ndarray) -> list[np.ndarray]:
    """Rows of a batch to make together: all of them, or its shorter and its longer items when
    that pads PIECE_FRAMES fewer frames per extra piece (the cut that pads least)."""
    order = np.argsort(lengths, kind="stable")
    ranked = lengths[order]
    n = len(ranked)
    if n < 2:
        return [order]
    cuts = np.arange(1, n)  # the first `cut` items of `ranked` make one piece, the rest the other
    padded = cuts * ranked[cuts - 1] + (n - cuts) * ranked[-1]
    best = int(np.argmin(padded))
    if padded[best] + PIECE_FRAMES >= n * ranked[-1]:
        return [np.arange(n)]
    cut = int(cuts[best])
    return [np.sort(order[:cut]), np.sort(order[cut:])]


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
