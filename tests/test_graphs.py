"""`cuda_graphs: true` (ablate/graphs.py) without a GPU: the frame buckets, which shapes get a graph
of their own, that capturing leaves the model as it was, and that the step captures under autocast
without its cache (PyTorch refuses otherwise). The capture itself is replaced by a stand-in that
does what torch.cuda.make_graphed_callables does to the model (warm-up passes, then the module);
the graphs themselves run in benchmarks/gpu_smoke.py, on a GPU."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_models import build, padded_batch
from torch import nn

from ablate.batching import DEVICE_WORK
from ablate.data.cache import Cache
from ablate.graphs import FRAME_BUCKET, GraphedModel, bucketed
from ablate.parts import build_parts
from ablate.spaces import recipe_config
from ablate.step import Step
from ablate.train import _optimizer, _trained, train_fold


GiB = 1 << 30


@pytest.fixture(autouse=True)
def device_memory(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The device memory GraphedModel asks about (no GPU here): 80 GiB free, none held; a test
    may change the numbers."""
    mem = {"free": 80 * GiB, "reserved": 0, "allocated": 0, "reserved_so_far": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (mem["free"], 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_stats",
                        lambda device=None: {"reserved_bytes.all.allocated": mem["reserved_so_far"]})
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: mem["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: mem["allocated"])
    return mem


@pytest.fixture
def captures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, ...]]]:
    """The shapes captured; the stand-in makes torch's three warm-up passes (forward and backward,
    gradients of the inputs only) and refuses an autocast cache, as torch does."""
    seen: list[tuple[int, ...]] = []

    def capture(shell: nn.Module, sample: tuple[torch.Tensor, ...], pool: object = None) -> nn.Module:
        if torch.is_autocast_enabled("cpu") and torch.is_autocast_cache_enabled():
            raise RuntimeError("make_graphed_callables does not support the autocast caching")
        assert DEVICE_WORK.locked(), "the batch thread could run CUDA calls during the capture"
        seen.append(tuple(sample[0].shape))
        for _ in range(3):  # as torch's warm-up: every trained weight must get a gradient
            out = shell(*sample)
            torch.autograd.grad(out.sum(), [w for w in shell.parameters() if w.requires_grad], allow_unused=False)
        return shell

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    yield seen


def test_bucketed_pads_to_a_multiple_with_masked_zeros() -> None:
    x, mask = padded_batch([5, 33], 33)
    bx, bmask = bucketed(x, mask)
    assert bx.shape[1] == bmask.shape[1] == 2 * FRAME_BUCKET
    assert torch.equal(bx[:, :33].nan_to_num(7.0), x.nan_to_num(7.0)) and torch.equal(bmask[:, :33], mask)
    assert not bmask[:, 33:].any() and not bx[:, 33:].any()
    same = bucketed(x[:, :32], mask[:, :32])
    assert same[0] is not None and same[0].shape[1] == 32


def test_one_graph_per_batch_size_bucket_and_dropout_rate(captures: list[tuple[int, ...]]) -> None:
    model = build("transformer").train()
    graphed = GraphedModel(model)
    for lengths, total in (([4, 5], 5), ([20, 9], 20), ([33, 2], 33), ([3, 1], 3), ([3, 1, 2], 3)):
        graphed(*padded_batch(lengths, total)).sum().backward()
    assert captures == [(2, 32, 12), (2, 64, 12), (3, 32, 12)]
    for m in model.modules():  # late dropout switches the rates: the captured graphs have the old ones
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    graphed(*padded_batch([4, 5], 5))
    assert captures[-1] == (2, 32, 12) and len(captures) == 4
    model.eval()  # validation: the model itself, no graph
    graphed(*padded_batch([4, 5], 5))
    model.train()
    with torch.no_grad():
        graphed(*padded_batch([6, 5], 6))
    assert len(captures) == 4


@pytest.mark.parametrize("name", ["transformer", "graph"])
def test_the_graphed_pass_is_the_models_and_capturing_leaves_it_as_it_was(name: str,
                                                                             captures: list[tuple[int, ...]]) -> None:
    """Dropout off: the embeddings and gradients of the padded batch are the model's own; the
    warm-up passes of the capture leave batch norm's running statistics where they were."""
    model = build(name, dropout=0.0).train()
    x, mask = padded_batch([7, 3], 7)
    expected = model(x, mask)
    grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    buffers = [b.clone() for b in model.buffers()]
    graphed = GraphedModel(model)
    graphed._capture(*bucketed(x, mask))
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers))
    got = graphed(x, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    for g, e in zip(torch.autograd.grad(got.square().sum(), list(model.parameters())), grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_the_step_captures_under_autocast_without_its_cache(captures: list[tuple[int, ...]]) -> None:
    cfg = recipe_config("smoke").replace(amp="bf16", device="cpu")
    torch.manual_seed(0)
    parts = build_parts(cfg, 5)
    optimizer, scheduler, scaler, two_pass, amp = _optimizer(cfg, parts, 4, torch.bfloat16, torch.device("cpu"))
    graphed = GraphedModel(parts.model)
    step = Step(parts, graphed, optimizer, scheduler, scaler, amp, torch.device("cpu"), cfg.grad_clip, two_pass, [],
                torch.Generator().manual_seed(0))
    width = int(parts.features.out_dim)
    loss = step(torch.randn(4, 9, width), torch.ones(4, 9, dtype=torch.bool), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss) and captures == [(4, 32, width)]


def test_train_fold_on_the_cpu_ignores_cuda_graphs(synth_cache: Path, captures: list[tuple[int, ...]]) -> None:
    data = Cache(synth_cache)
    cfg = recipe_config("smoke").replace(epochs=1, early_stopping=0, device="cpu")
    a = train_fold(cfg.replace(cuda_graphs=False), data, 0, progress=False)
    b = train_fold(cfg.replace(cuda_graphs=True), data, 0, progress=False)
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs] and not captures


def test_a_fold_records_whether_its_model_ran_in_graphs(synth_cache: Path, captures: list[tuple[int, ...]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fold's record (and the report's "trained on") says."""
    from ablate import train as train_mod

    data, cfg = Cache(synth_cache), recipe_config("smoke").replace(epochs=1)
    monkeypatch.setattr(train_mod, "_trained", lambda config, model, device: GraphedModel(model))
    r = train_fold(cfg, data, 0, progress=False)
    assert captures and r.graphs == "on"


def test_graphs_on_cuda_by_default_and_not_with_compile(captures: list[tuple[int, ...]]) -> None:
    cfg, model = recipe_config("full"), build("transformer")
    assert cfg.cuda_graphs and isinstance(_trained(cfg, model, torch.device("cuda")), GraphedModel)
    assert _trained(cfg, model, torch.device("cpu")) is model
    assert _trained(cfg.replace(compile=True), model, torch.device("cuda")) is model
    assert _trained(cfg.replace(cuda_graphs=False), model, torch.device("cuda")) is model


def test_a_model_that_cannot_be_captured_trains_without_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed capture (an operation CUDA graphs do not allow) warns once, and the fold goes on
    with the model itself; the warm-up's changes to the running statistics are undone."""
    tries: list[int] = []

    def capture(shell: nn.Module, sample: tuple[torch.Tensor, ...], pool: object = None) -> nn.Module:
        tries.append(1)
        shell(*sample)  # the warm-up moves batch norm's running statistics
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    model, alone = build("graph", dropout=0.0).train(), build("graph", dropout=0.0).train()
    graphed = GraphedModel(model)
    x, mask = padded_batch([7, 3], 7)
    with pytest.warns(RuntimeWarning, match="capturing .* failed .*operation not permitted"):
        got = graphed(x, mask)
    torch.testing.assert_close(got, alone(x, mask), atol=1e-5, rtol=0)
    for a, b in zip(model.buffers(), alone.buffers()):  # one pass each: the warm-up's was undone
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    graphed(*padded_batch([4, 40], 40))
    assert tries == [1] and graphed.failed.startswith("RuntimeError: operation not permitted") and not graphed.graphs
    assert graphed.state() == "failed: RuntimeError: operation not permitted when stream is capturing"


def test_a_shape_gets_a_graph_only_where_the_device_has_room(captures: list[tuple[int, ...]],
                                                             device_memory: dict[str, int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Graphs keep their memory: a new shape is captured only while what the captures so far
    reserved per item-frame, times its own item-frames, is left (free, or held unused by this
    process); a shape without room trains without a graph (warned once), and the graphs already
    captured still replay. What a capture reserved is a running total: memory given back during
    it does not hide it."""
    stand_in, replays = torch.cuda.make_graphed_callables, []

    class Replayed(nn.Module):
        def __init__(self, shell: nn.Module) -> None:
            super().__init__()
            self.shell = shell

        def forward(self, *a: torch.Tensor) -> torch.Tensor:
            replays.append(tuple(a[0].shape))
            return self.shell(*a)

    def capture(shell: nn.Module, sample: tuple[torch.Tensor, ...], pool: object = None) -> nn.Module:
        frames = sample[0].shape[0] * sample[0].shape[1]
        device_memory["reserved_so_far"] += frames * 48 * 2**20  # 48 MiB per item-frame
        device_memory["free"] -= frames * 48 * 2**20 - GiB  # and 1 GiB of cached blocks given back meanwhile
        return Replayed(stand_in(shell, sample, pool))

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    device_memory.update(free=8 * GiB, reserved=2 * GiB, allocated=1 * GiB)  # 1 GiB held unused
    graphed = GraphedModel(build("transformer").train())
    graphed(*padded_batch([4, 5], 5)).sum().backward()  # (2, 32): the first capture, nothing measured yet
    assert graphed.guard.per_frame == 48 * 2**20 and device_memory["free"] == 6 * GiB
    graphed(*padded_batch([40, 5], 40)).sum().backward()  # (2, 64): 6 GiB, 7 left
    with pytest.warns(RuntimeWarning, match=r"2.0 GiB of device memory left, a graph of this shape \(with its warm-up\) "
                                            r"would take about 13.5 GiB.*\(2 kept\)"):
        graphed(*padded_batch([3, 70, 2], 70)).sum().backward()  # (3, 96): no room
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        graphed(*padded_batch([6, 2], 6)).sum().backward()  # (2, 32): its graph replays
        graphed(*padded_batch([3], 3)).sum().backward()  # (1, 32): 1.5 GiB, 2 left: captured
        graphed(*padded_batch([3, 1, 2], 3)).sum().backward()  # (3, 32): 4.5 GiB, 1.5 left: no room
    assert captures == [(2, 32, 12), (2, 64, 12), (1, 32, 12)] and graphed.guard.refused == 2
    assert replays == [(2, 32, 12), (2, 64, 12), (2, 32, 12), (1, 32, 12)]
    assert graphed.state() == "on, some shapes without (device memory)"
    assert GraphedModel(build("transformer").train()).state() == ""


def test_an_allocator_without_a_running_total_leaves_the_guard_off(captures: list[tuple[int, ...]],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """cudaMallocAsync keeps fewer statistics: said once, and every shape is captured."""
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: {})
    graphed = GraphedModel(build("transformer").train())
    with pytest.warns(RuntimeWarning, match="keeps no running total"):
        graphed(*padded_batch([4, 5], 5)).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphed(*padded_batch([40, 5], 40)).sum().backward()
    assert captures == [(2, 32, 12), (2, 64, 12)] and graphed.guard.unmeasured and graphed.state() == "on"


def test_running_out_of_memory_in_a_capture_is_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full device stops the fold as any out-of-memory error does (the study's handling applies);
    only an operation that cannot be captured sends the fold on without graphs."""
    def capture(shell: nn.Module, sample: tuple[torch.Tensor, ...], pool: object = None) -> nn.Module:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    graphed = GraphedModel(build("transformer").train())
    with pytest.raises(torch.OutOfMemoryError):
        graphed(*padded_batch([4, 5], 5))
    assert not graphed.failed


def test_close_lets_go_of_the_graphs_and_the_gradients(captures: list[tuple[int, ...]]) -> None:
    model = build("transformer").train()
    graphed = GraphedModel(model)
    assert graphed.state() == ""  # nothing captured yet
    graphed(*padded_batch([4, 5], 5)).sum().backward()
    assert graphed.state() == "on"
    shells = list(graphed.graphs.values())
    vars(shells[0])["forward"] = lambda *a: None  # what make_graphed_callables leaves on a shell
    graphed.close()
    assert not graphed.graphs and "forward" not in vars(shells[0])
    assert all(p.grad is None for p in model.parameters())


def _faithful(shell: nn.Module, sample: tuple[torch.Tensor, ...], pool: object = None) -> nn.Module:
    """A stand-in that hands back gradients the way torch's graphed backward does: as detached
    views of buffers it keeps and overwrites on every backward (the weights may then hold them)."""
    weights = [w for w in shell.parameters() if w.requires_grad]
    buffers = [torch.zeros_like(w) for w in weights]

    class Graphed(torch.autograd.Function):
        @staticmethod
        def forward(ctx: object, x: torch.Tensor, mask: torch.Tensor, *ws: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                ctx.out = shell.inner(x, mask)  # type: ignore[attr-defined]
            return ctx.out.detach()  # type: ignore[attr-defined]

        @staticmethod
        def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            for b, g in zip(buffers, torch.autograd.grad(ctx.out, weights, grad)):  # type: ignore[attr-defined]
                b.copy_(g)  # the replay writes the same buffers every time
            return (None, None, *(b.detach() for b in buffers))

    vars(shell)["forward"] = lambda x, mask: Graphed.apply(x, mask, *weights)
    return shell


@pytest.mark.parametrize("changes", [{}, {"optimizer": "sam"}, {"awp": 0.05}, {"mixup": True}],
                         ids=["plain", "sam", "awp", "mixup"])
def test_steps_through_graph_buffers_are_the_eager_steps(changes: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Torch's graphed backward gives the weights its own buffers as gradients, overwritten by the
    next replay: a second backward onto gradients that were not set to None would count twice.
    Three steps of each path (SAM's two passes, AWP's second pass, mixup) through a stand-in that
    does that give the weights the eager steps give (dropout off)."""
    from ablate.components import AUGMENTATIONS
    from ablate.config import Component
    from ablate.step import Awp

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", _faithful)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    cfg = recipe_config("smoke").replace(device="cpu", amp="off", grad_clip=0.0)  # clipping would hide a 2x gradient
    if "optimizer" in changes:
        cfg = cfg.replace(optimizer=Component("sam", {"base": "ranger", "lr": 1e-3}))  # Adam-like steps barely see a 2x gradient; Ranger's first steps do
    finals = []
    for graphed in (False, True):
        torch.manual_seed(0)
        parts = build_parts(cfg, 5)
        for m in parts.model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        optimizer, scheduler, scaler, two_pass, amp = _optimizer(cfg, parts, 3, None, torch.device("cpu"))
        weights = [p for g in optimizer.param_groups for p in g["params"]]
        awp = Awp(changes.get("awp", 0.0), 0.0, 3, weights)
        awp.set(0)
        batch = [AUGMENTATIONS.build("mixup", {"p": 1.0})] if "mixup" in changes else []
        step = Step(parts, GraphedModel(parts.model) if graphed else parts.model, optimizer, scheduler, scaler, amp,
                    torch.device("cpu"), cfg.grad_clip, two_pass, batch, torch.Generator().manual_seed(0), awp)
        data = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.randn(4, 9, int(parts.features.out_dim), generator=data)
            step(x, torch.ones(4, 9, dtype=torch.bool), torch.randint(0, 5, (4,), generator=data))
        finals.append([w.detach().clone() for w in weights])
    for eager, through in zip(*finals):
        torch.testing.assert_close(through, eager, atol=1e-5, rtol=1e-4)
