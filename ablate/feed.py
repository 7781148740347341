"""Training and validation batches on the training device, for one fold of `train_fold`.

cache positions -> carried landmarks from the resident store (data/resident.py) -> augmentations
(components/augmentations.py) -> features (features.batched), whole batches at a time. On CUDA
the training batches are made one thread ahead (batching.prefetched). Validation features are
made once per fold when they fit in VAL_BUDGET_BYTES, else on every pass.
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

# Recorded with each study: numbers from another input path (other augmentation draws, `speed` by
# nearest frame; "batched-2": model init and batch order seeded per fold and repeat) are not
# comparable, so a study is not resumed across a change of it.
DATA_PATH = "batched-2"
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x [B, T, F], mask [B, T], labels [B], on the device
VAL_BUDGET_BYTES = 2 << 30  # validation features are kept for the fold when they fit in this


class Feed:
    """Batches on the training device: cache positions -> carried landmarks (resident) ->
    augmentations -> features, whole batches at a time. Validation features are made once."""

    def __init__(self, config: Config, data: Cache, fold: int, train_idx: np.ndarray, val_idx: np.ndarray,
                 features: torch.nn.Module, augs: Any, device: torch.device, sharing: int) -> None:
        self.features = copy.deepcopy(features).to(device)  # the parts keep theirs, on the host
        self.store = store_for(data, self.features.layout(), device, sharing)
        self.augs, self.train_idx, self.val_idx = augs, train_idx, val_idx
        self.key = (config.seed, config.fold_seed, fold)
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
        for positions in sampler:
            key = None if epoch is None else (*self.key, epoch)
            raw, y = self.store.batch(idx[positions], key)
            if epoch is not None:
                raw = self.augs(raw)
            x, mask = self.features.batched(raw)
            yield x, mask, y

    def train(self, epoch: int) -> Iterator[Batch]:
        self.train_sampler.epoch = epoch
        batches = self._batches(self.train_idx, self.train_sampler, epoch)
        return prefetched(batches, self.store.device) if self.store.device.type == "cuda" else batches

    def val(self) -> Iterable[Batch]:
        return self._val if self._val is not None else self._batches(self.val_idx, self.val_sampler, None)


