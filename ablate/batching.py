"""Feeding variable-length sequences: per-sequence features, length buckets, padding masks.

Features are computed per sequence in loader workers (augmentations change the raw landmarks, so
they cannot be precomputed for training). Batches are formed from sequences of similar length so
that short clips do not pay for long ones.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ablate.data.cache import Cache


class SequenceDataset(Dataset[tuple[torch.Tensor, int]]):
    """Items of a cache as (features [T', F] float32, label), keyed by (position, epoch).

    The epoch travels with the key (from the batch sampler, which lives in the main process), so
    persistent loader workers draw each epoch's augmentations without being restarted.
    """

    def __init__(self, cache: Cache, indices: np.ndarray, features: torch.nn.Module,
                 augmentations: Sequence[Any] = (), seed: int = 0) -> None:
        self.cache = cache
        self.indices = np.asarray(indices)
        self.features = features
        self.augmentations = list(augmentations)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, epoch = key
        idx = int(self.indices[i])
        raw = np.array(self.cache.sequence(idx), dtype=np.float32)  # copy out of the memmap
        if self.augmentations:
            # one generator per (seed, epoch, item): the same numbers whichever worker runs it
            rng = np.random.default_rng([self.seed, epoch, idx])
            for aug in self.augmentations:
                raw = aug(raw, rng)
        with torch.no_grad():
            feats = self.features(torch.from_numpy(np.ascontiguousarray(raw)))
        return feats, int(self.cache.labels[idx])


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled batches of similar-length items: sort within random chunks, shuffle the batches."""

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 chunk_batches: int = 50, max_batches: int = 0) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.chunk = batch_size * chunk_batches
        self.max_batches = max_batches
        self.epoch = 0

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:  # evaluation: fully sorted, fewest padded frames
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n)
        batches = []
        for s in range(0, n, self.chunk):
            part = perm[s : s + self.chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
        return batches[: self.max_batches] if self.max_batches else batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter([[(i, self.epoch) for i in b.tolist()] for b in self._batches()])

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        if self.shuffle:  # chunks can each leave a short batch
            n = sum(-(-min(self.chunk, len(self.lengths) - s) // self.batch_size) for s in range(0, len(self.lengths), self.chunk))
            return min(n, self.max_batches) if self.max_batches else n
        return n


def pad_collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack [T_i, F] sequences into x [B, T, F] (zero padded), mask [B, T] (True = frame), y [B]."""
    longest = max(f.shape[0] for f, _ in items)
    x = torch.zeros(len(items), longest, items[0][0].shape[1])
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, (f, _) in enumerate(items):
        x[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    return x, mask, y


def precompute(dataset: SequenceDataset, loader_args: dict[str, Any], budget_bytes: int = 2 << 30) -> Dataset[Any] | None:
    """Features of an un-augmented dataset, computed once (validation is the same every epoch).

    None when they would take more than `budget_bytes` of memory; then they are computed per epoch.
    """
    frames = int(np.minimum(dataset.cache.lengths[dataset.indices], 10_000).sum())
    width = getattr(dataset.features, "out_dim", 0)
    if dataset.augmentations or frames * width * 4 > budget_bytes:
        return None
    keys = [(i, 0) for i in range(len(dataset))]
    passed = ("num_workers", "worker_init_fn", "generator", "multiprocessing_context")
    loader = torch.utils.data.DataLoader(keys, batch_size=64, collate_fn=functools.partial(_fetch, dataset),
                                         **{k: v for k, v in loader_args.items() if k in passed})
    items = [item for batch in loader for item in batch]
    return _Precomputed(items)


def _fetch(dataset: SequenceDataset, keys: list[tuple[int, int]]) -> list[tuple[torch.Tensor, int]]:
    return [dataset[k] for k in keys]


class _Precomputed(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, items: list[tuple[torch.Tensor, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.items[key[0]]
