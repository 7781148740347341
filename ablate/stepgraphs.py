"""CUDA graphs of whole training steps (`cuda_graphs: true`, on CUDA): the forward pass, the loss,
the backward pass, clipping and the optimizer's update replayed as one graph per batch shape.

Why: with only the model in graphs (graphs.py) the rest of a step (the head, the loss, clipping and
the optimizer's few hundred small kernels) is still launched from Python, and at the recipe's
batch of 64 that bounds the step. Measured on an H100 (benchmarks/gpu_whole_step.py, 2026-11-27,
batch 64 x 64 frames, baseline recipe, bf16): the trainer's step 20,044 sequences/s, the step
captured whole 34,048.

When (train.py, `whole_steps`): one pass per step (not SAM), no GradScaler (fp16's skips a step
on the host), an optimizer whose update torch.optim can capture (`capturable`): Adam, AdamW,
RAdam, also inside pytorch-optimizer's Lookahead, which the Ranger on a GPU is, and a loss that
does not ask the host (tag "host"). Otherwise, and for the steps AWP perturbs, only the model runs
in graphs. Measured with the trainer (benchmarks/gpu_throughput.py, same H100 and day): 27,545 and
27,723 training sequences/s against 11,995 and 13,636 with the model alone in graphs. Outside the graph, between replays: the
batch-level augmentation (mixup draws on the host), the schedule (it writes the learning rate into
a device tensor that the graph reads), Lookahead's syncs every k steps (`after_step`) and the
weights' moving average.

Each (batch size, frame bucket, features, dtype, mixup or not, head, dropout rates) gets its own
graph, captured when first met, in one memory pool: a step replays one graph and its loss is
copied out before the next, so graphs never interleave. Before a capture, torch's recipe: warm-up
steps on a side stream (they create the optimizer's state); the step sets the gradients to None
first, so that the graph's backward writes them. The warm-up's changes (weights, optimizer state,
running statistics) are undone, so that a capture leaves training as it was.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ablate.batching import DEVICE_WORK
from ablate.device import device_failure
from ablate.graphs import FRAME_BUCKET, MemoryGuard

# torch.optim's optimizers that can run inside a graph and whose state starts at zeros (`_Saved`)
CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RAdam)
WARMUP = 3  # warm-up steps before a capture, as torch.cuda.make_graphed_callables makes
Body = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def capturable(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch.optim optimizer a graph can step: `optimizer` itself, or the one inside
    pytorch-optimizer's Lookahead; None if it is of another kind."""
    from pytorch_optimizer import Lookahead

    inner = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer
    return inner if type(inner) in CAPTURABLE else None


def counted_on_device(inner: torch.optim.Optimizer, device: torch.device) -> list[torch.Tensor]:
    """Set a capturable optimizer to keep its step counts and learning rates on the device, where
    a graph reads them (torch.optim's `capturable`), before its first step; returns the groups'
    learning-rate tensors. Its bias corrections and RAdam's rectification are then computed there
    in float32: in RAdam's first rectified steps (from step 6) the rectification, a difference of
    numbers near 2,000, comes out up to 0.6% smaller than in float64 (0.25% at step 10, 0.1% at
    20, 0.03% at 50; worked out with torch, 2026-11-27), and pytorch-ranger, like torch.optim
    without `capturable`, computes it in float64. On an H100 the weights' changes after 7 steps
    differed by 0.28-0.45% (of the largest change) between a whole-step run and the same steps run
    op by op with the float64 form, the same frame counts in both (benchmarks/gpu_smoke.py)."""
    rates = []
    for group in inner.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        rates.append(group["lr"])
    return rates


def after_step(optimizer: Any) -> None:
    """What Lookahead.step does after its inner optimizer's step, which the graph made: count the
    step in every group and, every k steps, sync the group's weights with their slow copy
    (tests/test_stepgraphs.py holds this equal to Lookahead.step)."""
    from pytorch_optimizer import Lookahead

    if not isinstance(optimizer, Lookahead):
        return
    for group in optimizer.param_groups:
        group["counter"] += 1
        if group["counter"] >= optimizer.k:
            group["counter"] = 0
            optimizer.update(group)


@dataclass
class _Graph:
    inputs: list[torch.Tensor | None]  # x [B, T, F], mask [B, T], y [B], y2 and lam [B] with mixup
    replay: Callable[[], Any]
    loss: torch.Tensor  # the graph's output, rewritten by every replay


class _Saved:
    """The weights, the optimizer's state and the modules' buffers, to undo a capture's warm-up.
    State a warm-up created is set back to zeros: a fresh Adam, AdamW or RAdam state (step count,
    moments) is all zeros."""

    def __init__(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer, modules: list[nn.Module]) -> None:
        self.params, self.optimizer = params, optimizer
        self.weights = [p.detach().clone() for p in params]
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        self.state = {p: {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
                      for p in params if p in optimizer.state}

    @torch.no_grad()
    def restore(self) -> None:
        for p, w in zip(self.params, self.weights):
            p.copy_(w)
        for b, old in self.buffers:
            b.copy_(old)
        for p in self.params:
            before = self.state.get(p)
            for k, v in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(v):
                    v.copy_(before[k]) if before is not None else v.zero_()


def _record(body: Callable[[], torch.Tensor], pool: Any) -> tuple[Callable[[], Any], torch.Tensor]:
    """(replay, output) of `body` captured as one CUDA graph (tests replace this: no GPU in CI)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = body()
    return graph.replay, out


@contextlib.contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Warm-up work on a stream of its own (torch's recipe for a capture), joined afterwards."""
    if device.type != "cuda":
        yield
        return
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


class StepGraphs:
    """Replays a training step's graph for each batch: `__call__` returns the step's loss (a
    device tensor of its own), or None where this batch's step must run as it is: no room on the
    device for a new graph (then none for the model's graphs either), or capturing failed (`failed`
    says why; warned once, the fold goes on with the model alone in graphs)."""

    def __init__(self, body: Body, optimizer: Any, model: nn.Module, device: torch.device) -> None:
        inner = capturable(optimizer)
        if inner is None:
            raise ValueError(f"{type(optimizer).__name__} cannot be captured in a CUDA graph")
        self.body, self.optimizer, self.inner, self.model, self.device = body, optimizer, inner, model, device
        self.params = [p for g in inner.param_groups for p in g["params"]]
        self.graphs: dict[tuple[Any, ...], _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        self.guard = MemoryGuard("cuda_graphs (whole steps)")
        self.failed = ""
        self.captured = 0  # graphs captured in this fold (`close` lets go of them, not of this count)
        self._dropouts: dict[int, list[nn.Dropout]] = {}
        # on CUDA, each group's learning rate, where its graphs read it
        self.lrs = counted_on_device(inner, device) if device.type == "cuda" else []

    def _rates_in_place(self) -> None:
        """The schedule writes a tensor learning rate in place (torch's LRScheduler fills it); one
        that put a number there instead would leave the graphs reading the old rate: put it back."""
        for group, lr in zip(self.inner.param_groups, self.lrs):
            if group["lr"] is not lr:
                lr.fill_(float(group["lr"]))
                group["lr"] = lr

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, y2: torch.Tensor | None,
                 lam: torch.Tensor | None, head: nn.Module) -> torch.Tensor | None:
        if self.failed:
            return None
        self._rates_in_place()
        frames = x.shape[1] + (-x.shape[1] % FRAME_BUCKET)
        # dropout's rate is captured with the graph: late dropout's switch needs graphs of its own
        key = (x.shape[0], frames, x.shape[2], x.dtype, y2 is None, id(head), tuple(m.p for m in self._rates(head)))
        graph = self.graphs.get(key)
        if graph is None:
            if not self.guard.room(self.device, x.shape[0] * frames, len(self.graphs)):
                return None
            graph = self._capture(key, x, mask, y, y2, lam, head, frames)
            if graph is None:
                return None
        self._fill(graph, x, mask, y, y2, lam)
        graph.replay()
        return graph.loss.clone()  # the next replay of this graph rewrites its output

    def _rates(self, head: nn.Module) -> list[nn.Dropout]:
        """The dropout layers of the model and of this head (looked up once per head)."""
        found = self._dropouts.get(id(head))
        if found is None:
            found = self._dropouts[id(head)] = [m for mod in (self.model, head) for m in mod.modules()
                                                if isinstance(m, nn.Dropout)]
        return found

    @staticmethod
    def _fill(graph: _Graph, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, y2: torch.Tensor | None,
              lam: torch.Tensor | None) -> None:
        """The batch into the graph's input buffers; frames past its own padded with zeros, masked
        out (the models ignore them: tests/test_models.py), as graphs.bucketed pads."""
        gx, gmask = graph.inputs[0], graph.inputs[1]
        assert gx is not None and gmask is not None
        t = x.shape[1]
        gx[:, :t].copy_(x)
        gmask[:, :t].copy_(mask)
        if t < gx.shape[1]:
            gx[:, t:].zero_()
            gmask[:, t:].zero_()
        for buffer, value in zip(graph.inputs[2:], (y, y2, lam)):
            if buffer is not None and value is not None:
                buffer.copy_(value)

    def _capture(self, key: tuple[Any, ...], x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor,
                 y2: torch.Tensor | None, lam: torch.Tensor | None, head: nn.Module, frames: int) -> _Graph | None:
        b = x.shape[0]
        inputs = [x.new_zeros(b, frames, x.shape[2]), mask.new_zeros(b, frames), y.clone(),
                  None if y2 is None else y2.clone(), None if lam is None else lam.clone()]
        graph = _Graph(inputs, lambda: None, x.new_zeros(()))
        self._fill(graph, x, mask, y, y2, lam)  # the warm-up steps on this batch's numbers

        def body() -> torch.Tensor:
            return self.body(*inputs)

        saved = _Saved(self.params, self.inner, [self.model, head])
        try:
            with DEVICE_WORK, self.guard.measuring(self.device, b * frames):  # no batch thread's CUDA calls meanwhile
                with _side_stream(self.device):
                    for _ in range(WARMUP):
                        body()
                saved.restore()
                graph.replay, graph.loss = _record(body, self.pool)
        except torch.OutOfMemoryError:
            saved.restore()
            raise  # not the step's fault: the study's handling of a full device applies
        except RuntimeError as e:  # an operation that cannot be captured (a loss that asks the host, say)
            if device_failure(e):
                raise  # a broken device (the study stops the worker), not a step that cannot be captured
            saved.restore()
            self.optimizer.zero_grad(set_to_none=True)
            self.failed = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            warnings.warn(f"cuda_graphs: capturing a whole training step failed ({self.failed}); this fold goes on "
                          "with the model alone in graphs", RuntimeWarning, stacklevel=3)
            return None
        self.graphs[key] = graph
        self.captured += 1
        return graph

    def state(self) -> str:
        """The fold's record: "whole steps" (some or all of its steps ran as one graph each), with
        ", some shapes without (device memory)" (`MemoryGuard`), "whole steps failed (<error>)"
        (the rest of the fold ran without), "" (nothing captured)."""
        if self.failed:
            return f"whole steps failed ({self.failed})"
        if not self.captured:
            return ""
        return "whole steps" + (", some shapes without (device memory)" if self.guard.refused else "")

    def close(self) -> None:
        """Let go of the graphs, their memory and the gradients they wrote: at the end of a fold,
        and when AWP starts (its steps are not captured whole, and it stays on to the end)."""
        if not self.graphs:
            return
        self.graphs.clear()
        for p in self.params:
            p.grad = None
