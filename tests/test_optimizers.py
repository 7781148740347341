"""Schedules against hand-computed values; SAM's two passes; Ranger on this torch, equal to pytorch-ranger's."""

from __future__ import annotations

import copy
import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from ablate.components.optimizers import (
    OPTIMIZERS,
    SCHEDULES,
    _ranger_class,
    lookahead_radam,
)
from ablate.errors import UserError


def _lrs(by: str, epochs: int = 10, steps: int = 10) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-4)
    sched = SCHEDULES.build("warmup_cosine", {"by": by}, optimizer=opt, epochs=epochs, steps_per_epoch=steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_by_step_matches_the_baseline_curve() -> None:
    lrs = _lrs("step")  # 100 steps, warmup 10
    assert lrs[0] == pytest.approx(1e-6)  # 1e-4 * 0.01
    assert lrs[5] == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    assert lrs[10] == pytest.approx(1e-4)  # the peak
    # halfway through the cosine: end + (peak - end) * 0.5 * (1 + cos(pi/2))
    assert lrs[55] == pytest.approx(1e-7 + (1e-4 - 1e-7) * 0.5)
    assert lrs[99] == pytest.approx(1e-7 + (1e-4 - 1e-7) * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert min(lrs) >= 1e-7


def test_warmup_cosine_by_epoch_is_constant_within_an_epoch() -> None:
    lrs = _lrs("epoch")
    assert len(set(lrs[20:30])) == 1 and lrs[20] != lrs[30]
    assert lrs[0] == pytest.approx(1e-6) and lrs[10] == pytest.approx(1e-6 + (1e-4 - 1e-6) * 10 / 10)


def test_bad_granularity_is_a_user_error() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(UserError, match="unknown schedule granularity"):
        SCHEDULES.build("warmup_cosine", {"by": "week"}, optimizer=torch.optim.SGD([p], lr=1.0), epochs=1, steps_per_epoch=1)


def test_sam_takes_two_passes_and_descends() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    target = torch.tensor([1.0, -2.0, 3.0, 0.5])
    opt = OPTIMIZERS.build("sam", {"lr": 0.05}, weights=[w])
    assert "two_pass" in OPTIMIZERS.get("sam").tags
    loss0 = float(((w - target) ** 2).sum())
    ((w - target) ** 2).sum().backward()
    before = w.detach().clone()
    opt.first_step(zero_grad=True)
    assert not torch.equal(w.detach(), before)  # perturbed for the second pass
    ((w - target) ** 2).sum().backward()
    opt.second_step(zero_grad=True)
    assert float(((w - target) ** 2).sum()) < loss0


def test_sam_unknown_base_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown SAM base optimizer 'sgdd'"):
        OPTIMIZERS.build("sam", {"base": "sgdd"}, weights=[torch.nn.Parameter(torch.zeros(1))])


def _ranger_pair() -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The same small network trained 40 steps (past RAdam's rectification at step 6 and six
    Lookahead syncs) by pytorch-ranger's Ranger (the registry's on a CPU) and by torch.optim's
    RAdam inside pytorch-optimizer's Lookahead (the registry's on a GPU): the weights before, and of each after."""
    from pytorch_ranger import Ranger

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.LayerNorm(64), torch.nn.GELU(), torch.nn.Linear(64, 5))
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = [p.detach().clone() for p in nets[0].parameters()]
    params = {"lr": 3e-3, "weight_decay": 0.01, "k": 6, "alpha": 0.5}
    opts = [Ranger(nets[0].parameters(), **params), lookahead_radam(nets[1].parameters(), **params)]
    x, y = torch.randn(32, 16), torch.randint(0, 5, (32,))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"This overload of add", category=UserWarning)  # pytorch-ranger's
        for _ in range(40):
            for net, opt in zip(nets, opts):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
    return start, [p.detach() for p in nets[0].parameters()], [p.detach() for p in nets[1].parameters()]


def test_ranger_computes_what_pytorch_ranger_does() -> None:
    start, ref, ours = _ranger_pair()
    assert max(float((a - b).abs().max()) for a, b in zip(ref, start)) > 3e-3  # it trained
    for a, b in zip(ref, ours):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)  # float rounding only (lerp vs mul + add)


def test_a_late_head_restarts_its_steps_as_with_pytorch_ranger() -> None:
    """pretrain_ce: the recipe's head gets gradients from step 33 on (not a multiple of
    Lookahead's k, so that a sync count not restarted would show). pytorch-ranger counts its steps
    from there by itself; Lookahead counts to its next sync per group, and the trainer's
    restart_head_steps restarts the head's group: the same weights after (float rounding apart)."""
    from pytorch_ranger import Ranger

    from ablate.train import restart_head_steps

    torch.manual_seed(0)
    body, head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    nets = [copy.deepcopy((body, head)) for _ in range(2)]
    groups = [[{"params": list(b.parameters())}, {"params": list(h.parameters())}] for b, h in nets]
    params = {"lr": 3e-3, "weight_decay": 0.01}
    opts = [Ranger(groups[0], **params), lookahead_radam(groups[1], **params)]
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"This overload of add", category=UserWarning)  # pytorch-ranger's
        for step in range(60):
            for (b, h), opt in zip(nets, opts):
                if step == 33:
                    restart_head_steps(opt)  # nothing to do for pytorch-ranger
                opt.zero_grad(set_to_none=True)
                z = b(x)
                (z.pow(2).mean() if step < 33 else torch.nn.functional.cross_entropy(h(z), y)).backward()
                opt.step()
    assert not torch.equal(nets[0][1].weight, head.weight)  # the head trained
    for a, b in zip([*nets[0][0].parameters(), *nets[0][1].parameters()], [*nets[1][0].parameters(), *nets[1][1].parameters()]):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=0, atol=1e-5)


def test_ranger_is_multi_tensor_on_a_gpu_only() -> None:
    from pytorch_ranger import Ranger

    assert type(OPTIMIZERS.build("ranger", {}, weights=[torch.nn.Parameter(torch.ones(3))])) is Ranger
    on_gpu = _ranger_class([SimpleNamespace(is_cuda=True)])  # CI has no GPU: a weight that says it is on one
    opt = on_gpu([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    assert type(opt).__name__ == "Lookahead" and isinstance(opt.optimizer, torch.optim.RAdam)
    assert opt.param_groups[0]["foreach"] is True and opt.param_groups[0]["betas"] == (0.95, 0.999)


def test_ranger_runs_on_this_torch_without_deprecation_errors() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    opt = OPTIMIZERS.build("ranger", {"lr": 1e-2}, weights=[w])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any other warning would fail here
        warnings.filterwarnings("ignore", message=r"This overload of add", category=UserWarning)
        for _ in range(8):  # past Lookahead's k=6 synchronisation
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
    assert float((w**2).sum()) < 3.0
