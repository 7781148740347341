"""Which sequences form each batch: length buckets, so that short clips do not pay for long ones.

Batches are cache positions; the landmarks, augmentations and features of a batch are made on the
training device from them (data/resident.py, components/augmentations.py, features.batched).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import torch

from ablate.device import cpu_cores


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


# Held by the batch thread while it makes a batch (CUDA work: allocations, copies, waits), and by
# a CUDA graph's capture (graphs.py), during which such calls from another thread are not allowed.
DEVICE_WORK = threading.Lock()


def prefetched(batches: Iterator[tuple[torch.Tensor, ...]], device: torch.device,
               depth: int = 3) -> Generator[tuple[torch.Tensor, ...], None, None]:
    """Make the batches in a background thread, up to `depth` ready (and one in the making) ahead
    of the consumer, so that preparing the next batches overlaps the model's step on this one: on
    CUDA (on a side stream) that is mostly launching small kernels; on the CPU it is the input
    path's arithmetic, on cores the step leaves free (see `spare_core`). The same batches in the
    same order (nothing in them draws from a generator the step uses: augmentations hash their
    numbers, _random.py); an error in the thread is raised here."""
    cuda = device.type == "cuda"
    side = torch.cuda.Stream(device) if cuda else None
    ready: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def work() -> None:
        try:
            with contextlib.ExitStack() as on:
                if side is not None:
                    on.enter_context(torch.cuda.device(device))
                    on.enter_context(torch.cuda.stream(side))
                while not stop.is_set():  # the consumer left: make no more
                    with DEVICE_WORK:  # not while waiting for room in the queue: a capture may wait for it
                        batch = next(batches, None)
                        if batch is None:
                            break
                        done = None
                        if side is not None:
                            done = torch.cuda.Event()
                            done.record(side)
                    ready.put((batch, done))
            ready.put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put(e)

    thread = threading.Thread(target=work, name="ablate-batches", daemon=True)
    thread.start()
    main = torch.cuda.current_stream(device) if cuda else None
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            batch, done = item
            if main is not None:
                main.wait_event(done)
                for t in batch:
                    t.record_stream(main)  # made on the side stream, used on this one
            yield batch
    finally:
        stop.set()
        while thread.is_alive():  # let a thread blocked on a full queue see the stop
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)


def spare_core(sharing: int) -> bool:
    """Whether the CPU has room for a batch thread in each of the `sharing` study workers on it:
    a thread's operations use as many intra-op threads as the step's, so each worker then needs
    twice its threads. True for one process at 1 thread on 2 cores (measured: feed.py), or at
    torch's default of one thread per physical core where each core runs two hardware threads;
    false for `ablate run --workers 2` on 2 cores, whose workers make their batches in turn."""
    return 2 * torch.get_num_threads() * max(1, sharing) <= cpu_cores()
