"""Which sequences form each batch: length buckets, so that short clips do not pay for long ones.

Batches are cache positions; the landmarks, augmentations and features of a batch are made on the
training device from them (data/resident.py, components/augmentations.py, features.batched).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class BucketBatchSampler:
    """Shuffled batches of similar-length items: sort within random chunks, shuffle the batches.
    Yields arrays of positions into `lengths`; set `epoch` before iterating."""

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 chunk_batches: int = 50, max_batches: int = 0) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.chunk = batch_size * chunk_batches
        self.max_batches = max_batches
        self.epoch = 0

    def batches(self) -> list[np.ndarray]:
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

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        if self.shuffle:  # chunks can each leave a short batch
            n = sum(-(-min(self.chunk, len(self.lengths) - s) // self.batch_size) for s in range(0, len(self.lengths), self.chunk))
            return min(n, self.max_batches) if self.max_batches else n
        return n
