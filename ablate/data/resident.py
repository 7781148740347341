"""The training data of a cache as a feature set needs it, prepared once per process: the carried
landmarks (the set's points and their mirror images) of every frame, plus per-frame, per-body-part
statistics of all 543 landmarks (see components/_rawbatch.py), in one flat array each.

They live on the training device when they fit (a GPU holds the full competition data at 102
points in about 6 GB), else in pinned host memory, from which each batch is gathered and copied
asynchronously. Batches come out as RawBatch on the device: padded to their longest item, NaN
points and zero statistics in the padding. Nothing here holds all 543 landmarks of the data set:
the cache's memory map is read in chunks.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from ablate.components._random import item_keys
from ablate.components._rawbatch import PARTS, STATS, Layout, RawBatch
from ablate.data.cache import FRAME_BYTES, Cache
from ablate.data.landmarks import N_LANDMARKS
from ablate.device import from_host
from ablate.data.landmarks import PARTS as PART_ROWS

CHUNK_FRAMES = 8192  # frames read from the memory map at a time (~50 MB of float32)
DEVICE_SHARE = 0.5  # use at most this share of a GPU's free memory to hold the data resident


def prepare_chunk(frames: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Raw frames [n, 543, 3] -> (carried points [n, 3, P] float32 with x and y missing together,
    statistics [n, K, 9] float32 of each body part's landmarks, summed in float64)."""
    xy_missing = np.isnan(frames[..., 0]) | np.isnan(frames[..., 1])
    rows = np.asarray(layout.row_list)
    points = frames[:, rows].copy()
    points[..., :2][xy_missing[:, rows]] = np.nan
    points = np.ascontiguousarray(points.transpose(0, 2, 1))  # coordinate-major, as RawBatch
    stats = np.zeros((len(frames), PARTS, STATS), dtype=np.float64)
    for k, (_, first, count) in enumerate(PART_ROWS):
        part = slice(first, first + count)
        valid = ~xy_missing[:, part]
        x = np.where(valid, frames[:, part, 0], 0.0).astype(np.float64)
        y = np.where(valid, frames[:, part, 1], 0.0).astype(np.float64)
        z_valid = ~np.isnan(frames[:, part, 2])
        z = np.where(z_valid, frames[:, part, 2], 0.0).astype(np.float64)
        stats[:, k] = np.stack([valid.sum(1), x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1), (x * y).sum(1),
                                z_valid.sum(1), z.sum(1), (z * z).sum(1)], axis=1)
    return points, stats.astype(np.float32)


class LandmarkStore:
    """Every sequence of `cache`, prepared for `layout`; `batch(items)` gives a RawBatch."""

    def __init__(self, cache: Cache, layout: Layout, device: torch.device, sharing: int = 1) -> None:
        if device.type == "cuda" and device.index is None:  # compare equal to the tensors' own device
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.layout = layout.to(device)
        self.offsets = cache.offsets.astype(np.int64)
        self.lengths = cache.lengths.astype(np.int64)
        total = int((self.offsets + self.lengths).max()) if len(self.lengths) else 0
        p = len(layout.row_list)
        self.padding = total  # one extra frame at the end, NaN points and zero statistics
        self.bytes = (total + 1) * (3 * p + PARTS * STATS) * 4
        self.resident = device.type != "cuda" or self.bytes <= DEVICE_SHARE * torch.cuda.mem_get_info(device)[0] / max(1, sharing)
        # filled in place, chunk by chunk: on a GPU the host never holds the whole data set
        where = device if self.resident else torch.device("cpu")
        pin = not self.resident  # streamed: gathered on the host, copied from page-locked memory
        self.points = torch.full((total + 1, 3, p), torch.nan, dtype=torch.float32, device=where, pin_memory=pin)
        self.stats = torch.zeros((total + 1, PARTS, STATS), dtype=torch.float32, device=where, pin_memory=pin)
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda a: self._fill(cache, layout, a, total), range(0, total, CHUNK_FRAMES)))
        self.host_labels = cache.labels.astype(np.int64)

    def _fill(self, cache: Cache, layout: Layout, first: int, total: int) -> None:
        """Frames [first, first + CHUNK_FRAMES) read with a plain file read, not through the
        cache's memory map, so that their pages are not counted (and kept) in this process."""
        n = min(CHUNK_FRAMES, total - first)
        raw = np.fromfile(cache.frames_file, dtype=np.float32, count=n * N_LANDMARKS * 3, offset=first * FRAME_BYTES)
        pts, st = prepare_chunk(raw.reshape(n, N_LANDMARKS, 3), layout)
        self.points[first : first + n].copy_(torch.from_numpy(pts))
        self.stats[first : first + n].copy_(torch.from_numpy(st))

    def batch(self, items: np.ndarray, key: tuple[int, int, int, int] | None = None) -> tuple[RawBatch, Tensor]:
        """(RawBatch of the cache indices `items`, their labels), on the device. `key` = (seed,
        fold seed, fold, epoch) keys each item's random draws; None for unaugmented batches."""
        items = np.asarray(items, dtype=np.int64)
        lengths = self.lengths[items]
        t = np.arange(int(lengths.max()))
        index = np.where(t < lengths[:, None], self.offsets[items][:, None] + t, self.padding)
        # index, lengths and labels go to the device as one small copy, then split there
        packed = torch.from_numpy(np.concatenate([index.ravel(), lengths, self.host_labels[items]]))
        if self.resident:
            packed = from_host(packed, self.device)
        n, b = index.size, len(items)
        index_t, lengths_t, labels = packed[:n].view(index.shape), packed[n : n + b], packed[n + b :]
        flat = index_t.flatten()
        points = self.points.index_select(0, flat).view(*index.shape, *self.points.shape[1:])
        stats = self.stats.index_select(0, flat).view(*index.shape, *self.stats.shape[1:])
        if not self.resident:  # gathered on the host, copied from page-locked memory
            points, stats, lengths_t, labels = (from_host(v, self.device) for v in (points, stats, lengths_t, labels))
        keys = item_keys(torch.from_numpy(items), *key) if key else torch.zeros(b, dtype=torch.int64)
        raw = RawBatch(points=points, stats=stats.double(), lengths=lengths_t, keys=keys, layout=self.layout)
        return raw, labels


_LAST: dict[tuple[object, ...], LandmarkStore] = {}


def store_for(cache: Cache, layout: Layout, device: torch.device, sharing: int = 1) -> LandmarkStore:
    """The store of (cache, layout, device), built once per process: folds and trials of a study
    share it. Only the latest is kept, so memory holds one data set at a time."""
    key = (str(cache.dir), str(cache.frames_file), cache.fingerprint, layout.row_list, str(device))
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = LandmarkStore(cache, layout, device, sharing)
    return _LAST[key]


def raw_batch(sequences: list[np.ndarray], layout: Layout, keys: Tensor | None = None,
              device: torch.device | str = "cpu") -> RawBatch:
    """A RawBatch of raw sequences [T_i, 543, 3] (tests, benchmarks): what the store would give."""
    frames = max(len(s) for s in sequences)
    points = torch.full((len(sequences), frames, 3, len(layout.row_list)), torch.nan)
    stats = torch.zeros((len(sequences), frames, PARTS, STATS), dtype=torch.float64)
    for i, seq in enumerate(sequences):
        pts, st = prepare_chunk(np.asarray(seq, dtype=np.float32), layout)
        points[i, : len(seq)], stats[i, : len(seq)] = torch.from_numpy(pts), torch.from_numpy(st).double()
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    keys = keys if keys is not None else torch.arange(len(sequences), dtype=torch.int64)
    return RawBatch(points=points.to(device), stats=stats.to(device), lengths=lengths.to(device), keys=keys.cpu(),
                    layout=layout.to(torch.device(device)))
