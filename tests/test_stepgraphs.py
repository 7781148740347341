"""Whole training steps in CUDA graphs (ablate/stepgraphs.py) without a GPU: which steps are
captured, that a capture's warm-up leaves training as it was, that Lookahead's syncs after a
replay are its own, the fallbacks, and the fold's record. The capture is replaced by a stand-in
whose replay runs the step's body on the graph's input buffers (what a replay computes); the
graphs themselves run in benchmarks/gpu_smoke.py, on a GPU."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ablate import stepgraphs
from ablate import train as train_mod
from ablate.components.augmentations import Mixup
from ablate.components.optimizers import OPTIMIZERS, lookahead_radam
from ablate.config import Component
from ablate.data.cache import Cache
from ablate.graphs import FRAME_BUCKET, GraphedModel
from ablate.parts import build_parts
from ablate.spaces import recipe_config
from ablate.step import Awp, Ema, Step
from ablate.stepgraphs import StepGraphs, after_step, capturable
from ablate.train import _optimizer, train_fold, whole_steps

GiB = 1 << 30
CLASSES = 5


@pytest.fixture(autouse=True)
def device_memory(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The device memory the guard asks about (no GPU here): 80 GiB free, none held."""
    mem = {"free": 80 * GiB, "reserved_so_far": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (mem["free"], 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_stats",
                        lambda device=None: {"reserved_bytes.all.allocated": mem["reserved_so_far"]})
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    return mem


@pytest.fixture
def captures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the captures; the stand-in's replay runs the body (a capture itself computes nothing)."""
    seen: list[int] = []

    def record(body: Callable[[], torch.Tensor], pool: object) -> tuple[Callable[[], Any], torch.Tensor]:
        if torch.is_autocast_enabled("cpu") and torch.is_autocast_cache_enabled():
            raise RuntimeError("a graph cannot be captured under autocast's cache")
        seen.append(1)
        out = torch.zeros(())
        return (lambda: out.copy_(body())), out

    monkeypatch.setattr(stepgraphs, "_record", record)
    yield seen


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.GELU(), torch.nn.Linear(16, 3))


def test_after_step_is_what_lookahead_does_after_its_inner_step() -> None:
    nets = [_net(), _net()]
    opts = [lookahead_radam(list(n.parameters()), lr=3e-2, k=3, weight_decay=0.01) for n in nets]
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for _ in range(10):  # three syncs
        for i, (net, opt) in enumerate(zip(nets, opts)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            if i == 0:
                opt.step()
            else:
                opt.optimizer.step()
                after_step(opt)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


def test_which_optimizers_a_graph_can_step() -> None:
    w = [torch.nn.Parameter(torch.ones(3))]
    ranger_on_gpu = lookahead_radam(w)
    assert capturable(ranger_on_gpu) is ranger_on_gpu.optimizer
    assert isinstance(capturable(OPTIMIZERS.build("adamw", {}, weights=w)), torch.optim.AdamW)
    assert isinstance(capturable(OPTIMIZERS.build("lookahead", {}, weights=w)), torch.optim.RAdam)
    for name in ("ranger", "lion", "madgrad", "sam"):  # on the CPU ranger is pytorch-ranger's; the others count on the host
        assert capturable(OPTIMIZERS.build(name, {}, weights=w)) is None, name
    with pytest.raises(ValueError, match="Lion cannot be captured"):
        StepGraphs(lambda *a: torch.zeros(()), OPTIMIZERS.build("lion", {}, weights=w), _net(), torch.device("cpu"))


def test_steps_are_captured_whole_only_where_they_can_be() -> None:
    cfg, gpu = recipe_config("full"), torch.device("cuda")
    opt = lookahead_radam([torch.nn.Parameter(torch.ones(3))])
    assert whole_steps(cfg, gpu, opt, None, False)
    assert not whole_steps(cfg, torch.device("cpu"), opt, None, False)
    assert not whole_steps(cfg.replace(cuda_graphs=False), gpu, opt, None, False)
    assert not whole_steps(cfg.replace(compile=True), gpu, opt, None, False)
    assert not whole_steps(cfg, gpu, opt, object(), False)  # fp16's GradScaler
    assert not whole_steps(cfg, gpu, opt, None, True)  # SAM
    assert not whole_steps(cfg.replace(loss=Component("multi_similarity", {})), gpu, opt, None, False)  # its miner
    assert not whole_steps(cfg, gpu, OPTIMIZERS.build("lion", {}, weights=[torch.nn.Parameter(torch.ones(3))]), None, False)


TRANSFORMER = Component("transformer", {"width": 32, "heads": 4, "dropout": 0.0})
# batch norm's running statistics: buffers that a capture's warm-up moves
CONV = Component("conv1d_transformer", {"width": 32, "heads": 4, "conv_blocks": 1, "kernel": 5, "dropout": 0.0,
                                        "top_dropout": 0.0})


def _steps(whole: bool, mixup: bool = False, awp: float = 0.0, ema: float = 0.0,
           optimizer: Component = Component("lookahead", {"lr": 3e-3, "k": 2}), model: Component = TRANSFORMER,
           amp: torch.dtype | None = None, graphed: Any = None) -> tuple[Step, Any]:
    """A Step of the smoke recipe (dropout off: a capture's warm-up draws no dropout masks to
    shift the later ones), its optimizer Lookahead(RAdam) with a sync every 2 steps; `graphed`:
    what makes the model's graphs of its steps run as they are (else the model itself)."""
    cfg = recipe_config("smoke").replace(optimizer=optimizer, device="cpu", awp=awp, awp_from=0.0, model=model)
    torch.manual_seed(0)
    parts = build_parts(cfg, CLASSES)
    optimizer_, scheduler, scaler, two_pass, amp = _optimizer(cfg, parts, 10, amp, torch.device("cpu"))
    weights = [p for g in optimizer_.param_groups for p in g["params"]]
    aw = Awp(cfg.awp, cfg.awp_from, 2, weights)
    aw.set(0)
    model_ = graphed(parts.model) if graphed else parts.model
    step = Step(parts, model_, optimizer_, scheduler, scaler, amp, torch.device("cpu"), cfg.grad_clip, two_pass,
                [Mixup(0.5, 0.4)] if mixup else [], torch.Generator().manual_seed(1), aw, Ema(parts, ema), whole=whole)
    return step, parts


def _batches(width: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shapes A, B, A, B, C: two frame buckets (the second A and B shorter than the first: the
    buffers hold the longer batch's frames), then another batch size; the padding holds junk."""
    g = torch.Generator().manual_seed(3)
    out = []
    for b, t in ((4, 12), (4, FRAME_BUCKET + 5), (4, 9), (4, FRAME_BUCKET + 1), (3, 7)):  # A shorter after a longer
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        mask = torch.arange(t)[None] < lengths[:, None]
        x = torch.where(mask[..., None], torch.randn(b, t, width, generator=g), 50.0)
        out.append((x, mask, torch.randint(0, CLASSES, (b,), generator=g)))
    return out


@pytest.mark.parametrize("mixup,ema,model", [(False, 0.0, TRANSFORMER), (True, 0.9, TRANSFORMER), (False, 0.0, CONV)])
def test_a_step_captured_whole_trains_as_the_step_does(captures: list[int], mixup: bool, ema: float,
                                                       model: Component) -> None:
    """The same losses, weights and running statistics as the eager step, over shapes A, B, A, B,
    C: the warm-up steps before each capture are undone, Lookahead syncs after the replays, the
    input buffers are refilled (and their padding cleared) for each batch; one capture per shape."""
    eager, parts_e = _steps(False, mixup, ema=ema, model=model)
    whole, parts_w = _steps(True, mixup, ema=ema, model=model)
    batches = _batches(int(parts_e.features.out_dim))
    for x, mask, y in batches:
        torch.testing.assert_close(whole(x, mask, y), eager(x, mask, y), atol=1e-5, rtol=1e-5)
    assert len(captures) == 3 and whole.graphs() == "whole steps"
    for a, b in zip([*parts_e.model.parameters(), *parts_e.head.parameters(), *parts_e.model.buffers()],
                    [*parts_w.model.parameters(), *parts_w.head.parameters(), *parts_w.model.buffers()]):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    if ema:
        assert whole.ema is not None and eager.ema is not None and whole.ema.updates == eager.ema.updates == 5
    assert whole.opt.param_groups[0]["counter"] == eager.opt.param_groups[0]["counter"] == 1


def test_a_step_that_cannot_be_captured_goes_on_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed capture (after its warm-up moved the weights) warns once; that step and the rest
    run as they are, with the numbers of a step never captured."""
    def record(body: Callable[[], torch.Tensor], pool: object) -> tuple[Callable[[], Any], torch.Tensor]:
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(stepgraphs, "_record", record)
    eager, parts_e = _steps(False)
    whole, parts_w = _steps(True)
    batches = _batches(int(parts_e.features.out_dim))
    with pytest.warns(RuntimeWarning, match="capturing a whole training step failed .*operation not permitted"):
        torch.testing.assert_close(whole(*batches[0]), eager(*batches[0]), atol=1e-6, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in batches[1:]:
            torch.testing.assert_close(whole(*batch), eager(*batch), atol=1e-6, rtol=0)
    assert whole.graphs() == "whole steps failed (RuntimeError: operation not permitted when stream is capturing)"
    for a, b in zip(parts_e.model.parameters(), parts_w.model.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_running_out_of_memory_in_a_capture_stops_the_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    def record(body: Callable[[], torch.Tensor], pool: object) -> tuple[Callable[[], Any], torch.Tensor]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(stepgraphs, "_record", record)
    whole, parts = _steps(True)
    before = [p.detach().clone() for p in parts.model.parameters()]
    with pytest.raises(torch.OutOfMemoryError):
        whole(*_batches(int(parts.features.out_dim))[0])
    assert whole.whole is not None and not whole.whole.failed
    assert all(torch.equal(a, b) for a, b in zip(parts.model.parameters(), before))  # the warm-up undone


def test_a_shape_without_room_and_awps_steps_run_as_they_are(captures: list[int], device_memory: dict[str, int],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for a new shape's graph: that step runs as it is, the model too (no room for its
    graph either; said once, and in the record); shapes captured before still replay. Steps that
    AWP perturbs are never captured: from AWP's start the whole steps' graphs are let go."""
    model_graphs: list[int] = []
    monkeypatch.setattr(GraphedModel, "_capture", lambda self, x, mask: model_graphs.append(1) or self.model)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    whole, parts = _steps(True, graphed=GraphedModel)
    batches = _batches(int(parts.features.out_dim))
    device_memory["reserved_so_far"] = 0
    whole(*batches[0])  # (4, 32): captured, measured at 0 bytes per item-frame (the stand-in reserves nothing)
    assert whole.whole is not None
    whole.whole.guard.per_frame = float(GiB)  # as if the first capture had reserved 1 GiB per item-frame
    device_memory["free"] = 200 * GiB  # (4, 64) needs 256 GiB
    with pytest.warns(RuntimeWarning, match="whole steps.*200.0 GiB of device memory left"):
        whole(*batches[1])
    whole(*batches[2])  # (4, 32) replays
    assert len(captures) == 1 and whole.graphs() == "whole steps, some shapes without (device memory)"
    assert not model_graphs
    with_awp, parts = _steps(True, awp=0.01, graphed=GraphedModel)
    assert with_awp.awp is not None and with_awp.whole is not None
    with_awp.awp.on = False
    with_awp(*batches[0])  # before AWP's start: whole
    with_awp.awp.on = True
    for batch in batches:
        with_awp(*batch)
    assert len(captures) == 2 and not with_awp.whole.graphs and len(model_graphs) == 3
    assert with_awp.graphs() == "whole steps; on"


def test_a_fold_trained_in_whole_steps_is_the_fold_trained_without(synth_cache: Path, captures: list[int],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """train_fold with its steps captured whole (forced on the CPU) gives the fold's numbers, and
    its record says so; the graphs and their gradients are let go at the end."""
    data = Cache(synth_cache)
    cfg = recipe_config("smoke").replace(epochs=2, early_stopping=0, device="cpu",
                                         optimizer=Component("lookahead", {"lr": 3e-3, "k": 3}),
                                         model=Component("transformer", {"width": 32, "heads": 4, "dropout": 0.0}))
    alone = train_fold(cfg, data, 0, progress=False)
    monkeypatch.setattr(train_mod, "whole_steps", lambda *a: True)
    whole = train_fold(cfg, data, 0, progress=False, keep_model=True)
    assert captures and whole.graphs == "whole steps" and alone.graphs == ""
    for a, b in zip(alone.epochs, whole.epochs):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4) and a.val_loss == pytest.approx(b.val_loss, rel=1e-4)
    assert whole.parts is not None and all(p.grad is None for p in whole.parts.model.parameters())



def test_a_rate_the_schedule_replaced_is_put_back_where_the_graphs_read_it() -> None:
    """On CUDA the graphs read each group's learning rate from a device tensor, which torch's
    schedules fill in place; a rate written as a number instead is copied into that tensor."""
    w = [torch.nn.Parameter(torch.ones(3))]
    graphs = StepGraphs(lambda *a: torch.zeros(()), lookahead_radam(w, lr=0.1), _net(), torch.device("cpu"))
    lr = torch.tensor(0.1)
    graphs.lrs, graphs.inner.param_groups[0]["lr"] = [lr], 0.25  # as on CUDA, then a number written over it
    graphs._rates_in_place()
    assert graphs.inner.param_groups[0]["lr"] is lr and float(lr) == 0.25


def test_each_constant_of_a_captured_step_has_a_graph_of_its_own(captures: list[int]) -> None:
    """What a graph holds as it was captured: the batch size, the padded frames, mixup or not,
    the head and the dropout rates (the model's, late dropout's switch, and the head's)."""
    step, parts = _steps(True, mixup=True)
    a, b = _batches(int(parts.features.out_dim))[:2]
    step(*a)
    step(*a)
    step(*b)  # another frame bucket
    step(a[0][:3], a[1][:3], a[2][:3])  # another batch size
    assert len(captures) == 3
    step.batch_augs = []  # no mixup
    step(*a)
    dropouts = [m for m in parts.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts
    for m in dropouts:
        m.p = 0.0 if m.p else 0.1  # as late dropout switches them
    step(*a)
    head = copy.deepcopy(parts.head)
    step.parts = type(parts)(parts.features, parts.model, head)  # as the pretraining head hands over
    step(*a)
    head.add_module("extra", torch.nn.Dropout(0.2))  # the head's dropout too (looked up once per head)
    step.whole._dropouts.pop(id(head))
    step(*a)
    assert len(captures) == 7


def test_awp_from_the_first_epoch_leaves_whole_steps_off() -> None:
    cfg, gpu = recipe_config("full"), torch.device("cuda")
    opt = lookahead_radam([torch.nn.Parameter(torch.ones(3))])
    assert whole_steps(cfg.replace(awp=0.01, awp_from=0.5), gpu, opt, None, False)
    assert not whole_steps(cfg.replace(awp=0.01, awp_from=0.0), gpu, opt, None, False)


def test_the_step_captures_under_autocast_without_its_cache(captures: list[int]) -> None:
    step, parts = _steps(True, amp=torch.bfloat16)
    assert torch.isfinite(step(*_batches(int(parts.features.out_dim))[0])) and len(captures) == 1


def test_a_rate_written_as_a_number_is_put_back_before_the_replay(captures: list[int]) -> None:
    """Each step puts a learning rate the schedule wrote as a number back into the tensor the
    graphs read (here the step's own AdamW, which takes a tensor rate on the CPU too)."""
    step, parts = _steps(True, optimizer=Component("adamw", {"lr": 1e-2}))
    assert step.whole is not None
    group = step.whole.inner.param_groups[0]
    lr = torch.tensor(float(group["lr"]))
    step.whole.lrs, group["lr"] = [lr], 0.5
    step(*_batches(int(parts.features.out_dim))[0])
    assert group["lr"] is lr and float(lr) != 0.5  # 0.5 for the step, then the schedule's next rate


def test_a_fold_with_the_pretraining_head_and_late_dropout_captures_each_phase(synth_cache: Path, captures: list[int],
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """pretrain_ce and late dropout in whole steps: the pretraining head's graphs, then the
    recipe's head's with the dropout switched on (one capture per shape in each), finite losses."""
    data = Cache(synth_cache)
    cfg = recipe_config("smoke").replace(epochs=2, early_stopping=0, device="cpu", pretrain_ce=0.5, late_dropout=0.5,
                                         optimizer=Component("lookahead", {"lr": 3e-3}), max_train_batches=3)
    monkeypatch.setattr(train_mod, "whole_steps", lambda *a: True)
    counted: list[int] = []
    monkeypatch.setattr(StepGraphs, "_capture", _counting(StepGraphs._capture, counted))
    r = train_fold(cfg, data, 0, progress=False)
    assert r.graphs == "whole steps" and all(np.isfinite(e.train_loss) for e in r.epochs)
    assert len(counted) == len(set(counted)) and len({k[5] for k in counted}) == 2  # one capture per key; two heads
    assert {k[6] for k in counted if k[5] == counted[0][5]} != {k[6] for k in counted if k[5] != counted[0][5]}


def _counting(capture: Callable[..., Any], keys: list[tuple[Any, ...]]) -> Callable[..., Any]:
    def wrapped(self: StepGraphs, key: tuple[Any, ...], *a: Any) -> Any:
        keys.append(key)
        return capture(self, key, *a)
    return wrapped


@pytest.mark.parametrize("error", ["CUDA error: an illegal memory access was encountered", "device-side assert triggered"])
def test_a_broken_device_in_a_capture_is_not_a_fallback(monkeypatch: pytest.MonkeyPatch, error: str) -> None:
    """A fatal CUDA error stops the fold (the study then stops the worker: queue.py), whichever
    graphs were being captured; only an operation that cannot be captured is a fallback."""
    def record(body: Callable[[], torch.Tensor], pool: object) -> tuple[Callable[[], Any], torch.Tensor]:
        raise RuntimeError(error)

    def capture(shell: torch.nn.Module, sample: tuple[torch.Tensor, ...], pool: object = None) -> torch.nn.Module:
        raise RuntimeError(error)

    monkeypatch.setattr(stepgraphs, "_record", record)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    whole, parts = _steps(True)
    batch = _batches(int(parts.features.out_dim))[0]
    with pytest.raises(RuntimeError, match=error.split(":")[0]):
        whole(*batch)
    assert whole.whole is not None and not whole.whole.failed
    graphed = GraphedModel(parts.model)
    with pytest.raises(RuntimeError, match=error.split(":")[0]):
        graphed(batch[0], batch[1])
    assert not graphed.failed
