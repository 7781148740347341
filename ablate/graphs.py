"""CUDA graphs of the model's training forward and backward (`cuda_graphs: true`, on CUDA only).

Why: at the recipe's batch of 64 a step of the baseline model launches a few hundred small
kernels, and on an H100 the GPU was busy about 14% of a step (README, GPU throughput): the step is
bound by launching from Python, not by arithmetic. A CUDA graph replays a captured forward (and
its backward) as one launch each.

A graph holds fixed shapes, and batches come in every frame count, so a batch's frames are padded
up to a multiple of FRAME_BUCKET (the models ignore padded frames: tests/test_models.py) and each
(batch size, bucket, dropout setting) gets its own graph, captured when it is first met, with
`torch.cuda.make_graphed_callables` (PyTorch's partial-network capture), all in one memory pool.
The head, the loss and the optimizer stay as they are (eager); only the model is graphed. Where
the whole step can be captured (stepgraphs.py), that is done instead; this serves the steps it
cannot hold (SAM, fp16's GradScaler, AWP's perturbed steps, a loss that asks the host, an
optimizer that counts on the host).

Sharing one pool is safe here because graphs never interleave: a step replays one graph's forward,
then the same graph's backward, and consumes the outputs before the next replay. Every backward
starts from gradients set to None (`Step`, SAM and AWP zero them that way): the graph's gradient
buffers are then handed to the weights, not added to them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.batching import DEVICE_WORK
from ablate.device import device_failure

FRAME_BUCKET = 32  # frames; up to 12 buckets at the recipe's 384, each padded batch at most 31 frames longer


class _Shell(nn.Module):
    """The model under another module, so that make_graphed_callables replaces the shell's
    forward (one per captured shape) rather than the model's own, and still finds its weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner(x, mask)


def bucketed(x: torch.Tensor, mask: torch.Tensor, bucket: int = FRAME_BUCKET) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, T, F] and mask [B, T] padded with zeros (masked out) to the next multiple of `bucket` frames."""
    extra = -x.shape[1] % bucket
    if extra == 0:
        return x, mask
    return F.pad(x, (0, 0, 0, extra)), F.pad(mask, (0, extra), value=False)


def _reserved_so_far(device: torch.device) -> int | None:
    """Bytes this process's allocator has reserved from the device so far: a running total, which
    memory given back (an out-of-memory retry, the empty_cache a capture starts with) does not
    lower, as it would memory_reserved's. None where the allocator does not count it (PyTorch's
    cudaMallocAsync backend keeps fewer statistics)."""
    value = torch.cuda.memory_stats(device).get("reserved_bytes.all.allocated")
    return None if value is None else int(value)


class MemoryGuard:
    """Whether the device has room for one more graph (GraphedModel here, StepGraphs in
    stepgraphs.py). Graphs keep their memory until the fold ends, and every shape has its own: with
    larger batches, a smaller GPU or several workers on one they could take memory that training
    without them had fitted in. Each capture is measured (`measuring`): what it reserved per
    item-frame (batch size x padded frames), the most seen, times a new shape's item-frames is what
    that shape needs (the models' memory grows with the frames, attention by a fused kernel
    included). That count is the graph's memory and the warm-up's eager passes before it (given
    back when the capture starts): about the graph and as much again, which the eager rest of
    training needs too. Counted as left: memory that no one holds and memory this process's
    allocator holds unused. A shape without room trains without a graph (warned once; the fold's
    record says so)."""

    def __init__(self, what: str) -> None:
        self.what = what  # "cuda_graphs" or "cuda_graphs (whole steps)", for the warnings
        self.per_frame = 0.0  # bytes a capture reserved per item-frame of its shape, the most seen
        self.unmeasured = False  # the allocator keeps no running total: the guard is off
        self.refused = 0  # new shapes that trained without graphs for want of device memory

    def room(self, device: torch.device, frames: int, kept: int) -> bool:
        need = self.per_frame * frames
        free, _ = torch.cuda.mem_get_info(device)
        left = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        if left >= need:
            return True
        if not self.refused:
            warnings.warn(f"{self.what}: {left / 2**30:.1f} GiB of device memory left, a graph of this shape (with "
                          f"its warm-up) would take about {need / 2**30:.1f} GiB; shapes without room train "
                          f"without CUDA graphs ({kept} kept)", RuntimeWarning, stacklevel=4)
        self.refused += 1
        return False

    @contextlib.contextmanager
    def measuring(self, device: torch.device, frames: int) -> Iterator[None]:
        """Around a capture (its warm-up included): what it reserved, per item-frame."""
        before = _reserved_so_far(device)
        yield
        after = _reserved_so_far(device)
        if before is None or after is None:
            if not self.unmeasured:
                warnings.warn(f"{self.what}: this allocator keeps no running total of reserved memory; graphs "
                              "are captured without checking the room left", RuntimeWarning, stacklevel=5)
            self.unmeasured = True
        else:
            self.per_frame = max(self.per_frame, (after - before) / frames)


class GraphedModel:
    """Calls the model like `model(x, mask)`: in training with gradients, through a CUDA graph of
    its padded shape; otherwise (validation, no_grad) the model itself."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        self.graphs: dict[tuple[Any, ...], nn.Module] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.failed = ""  # why capturing failed, if it did (the fold then trains without graphs)
        self.guard = MemoryGuard("cuda_graphs")

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not (self.model.training and torch.is_grad_enabled()) or self.failed:
            return self.model(x, mask)
        xb, mb = bucketed(x, mask)
        # dropout's rate is captured with the graph: late dropout's switch needs graphs of its own
        key = (*xb.shape, xb.dtype, tuple(m.p for m in self.dropouts))
        graphed = self.graphs.get(key)
        if graphed is None:
            if not self.guard.room(x.device, xb.shape[0] * xb.shape[1], len(self.graphs)):
                return self.model(x, mask)
            try:
                graphed = self.graphs[key] = self._capture(xb, mb)
            except torch.OutOfMemoryError:
                raise  # not the model's fault: the study's handling of a full device applies
            except RuntimeError as e:  # a model with an operation that cannot be captured: train it as it is
                if device_failure(e):
                    raise  # a broken device (the study stops the worker), not a model that cannot be captured
                self.failed = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
                warnings.warn(f"cuda_graphs: capturing {type(self.model).__name__} failed ({self.failed}); "
                              "this fold trains without CUDA graphs", RuntimeWarning, stacklevel=2)
                return self.model(x, mask)
        return graphed(xb, mb)

    def state(self) -> str:
        """What a fold's record says: "on" (its training passes ran through graphs), "on, some shapes
        without (device memory)" (`MemoryGuard`), "failed: <the error's first line>" (it trained without
        them from then on), "" (nothing was captured)."""
        if self.failed:
            return f"failed: {self.failed}"
        if not self.graphs:
            return ""
        return "on, some shapes without (device memory)" if self.guard.refused else "on"

    def close(self) -> None:
        """At the end of a fold: let go of the graphs and their memory. make_graphed_callables sets
        each shell's forward to a closure over the shell, a cycle that only a full garbage
        collection would free, and the weights' gradients may be the graphs' own buffers."""
        for shell in self.graphs.values():
            vars(shell).pop("forward", None)
        self.graphs.clear()
        for p in self.model.parameters():
            p.grad = None

    def _capture(self, x: torch.Tensor, mask: torch.Tensor) -> nn.Module:
        """A shell whose forward replays the graph of this shape. Capturing runs the model a few
        times on a side stream (warm-up): its buffers (batch norm's running statistics) are put
        back afterwards, also when it fails, so that capturing leaves the model as it was."""
        saved = [b.detach().clone() for b in self.model.buffers()]
        sample = (x.detach().clone(), mask.clone())  # the graph's own input buffers
        try:
            with DEVICE_WORK:  # the batch thread's CUDA calls would break the capture (and the count below)
                with self.guard.measuring(x.device, x.shape[0] * x.shape[1]):
                    graphed = torch.cuda.make_graphed_callables(_Shell(self.model), sample, pool=self.pool)
                return graphed
        finally:
            with torch.no_grad():
                for b, old in zip(self.model.buffers(), saved):
                    b.copy_(old)
