"""Optimizers and learning-rate schedules, from maintained packages (no hand-written optimizers).

Every optimizer builder takes the parameters to optimise (or parameter groups) as context and its
own peak learning rate `lr` as a param (so a search space can tune it per optimizer). Entries
tagged "two_pass" (SAM) need two forward/backward passes per step; the trainer calls
`first_step`/`second_step` for them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ablate.errors import UserError, unknown
from ablate.registry import Registry

OPTIMIZERS = Registry("optimizer", context=("weights",))  # weights: the parameters to optimise
SCHEDULES = Registry("schedule", context=("optimizer", "epochs", "steps_per_epoch"))

# pytorch-ranger 0.1.1 calls the deprecated addcmul_/add_(scalar, tensor) overloads on torch 2.x;
# they still compute the right thing. Silence exactly that warning, nothing else.
warnings.filterwarnings("ignore", message=r"This overload of add", category=UserWarning)

Params = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]  # weights, or parameter groups {"params": [...]}


def lookahead_radam(weights: Params, *, lr: float = 1e-3, k: int = 6, alpha: float = 0.5,
                    weight_decay: float = 0.0) -> Optimizer:
    """Ranger as pytorch-ranger computes it, from two maintained pieces: torch.optim's multi-tensor
    RAdam (Ranger's betas 0.95, 0.999 and eps 1e-5; its decoupled weight decay, p -= lr * wd * p;
    momentum SGD until the rectification starts, at the same N_sma 5) inside pytorch-optimizer's
    Lookahead (every k steps the weights move alpha of the way from their slow copy). torch.optim's
    RAdam can run inside a CUDA graph (`capturable`, stepgraphs.py), which a Ranger that counts its
    steps on the host cannot. tests/test_optimizers.py holds it equal to pytorch-ranger as built
    (counting on the host); captured, it counts on the device, in float32
    (stepgraphs.counted_on_device: up to 0.6% smaller steps in its first rectified steps)."""
    from pytorch_optimizer import Lookahead

    inner = torch.optim.RAdam(weights, lr=lr, betas=(0.95, 0.999), eps=1e-5, weight_decay=weight_decay,
                              decoupled_weight_decay=True, foreach=True)
    return Lookahead(inner, k=k, alpha=alpha)


def _tensors(weights: list[Any]) -> list[torch.Tensor]:
    """The tensors of a list of weights or of parameter groups ({"params": [...]})."""
    return [t for w in weights for t in (w["params"] if isinstance(w, dict) else [w])]


def _ranger_class(weights: list[Any]) -> Callable[..., Optimizer]:
    """Ranger as the baseline used it (the pytorch-ranger package). On the CPU that package itself
    computes it, one tensor at a time, so every CPU figure stays as measured (the multi-tensor
    form measured no faster there). On a GPU, `lookahead_radam`: multi-tensor (pytorch-ranger
    launches about 9 kernels per weight tensor, half of a GPU step's launches, profiled on an H100,
    2026-11-26), and a step that can be captured whole. pytorch-ranger counts steps per tensor,
    Lookahead per parameter group: a head that starts training late (pretrain_ce) gets its own
    group, restarted by train.restart_head_steps."""
    if any(t.is_cuda for t in _tensors(weights)):
        return lookahead_radam
    from pytorch_ranger import Ranger

    return Ranger


@OPTIMIZERS.register("ranger")
def ranger(*, weights: Params, lr: float = 1e-4, weight_decay: float = 0.0, k: int = 6, alpha: float = 0.5) -> Optimizer:
    """Ranger (RAdam + Lookahead): the baseline's optimizer."""
    weights = list(weights)
    return _ranger_class(weights)(weights, lr=lr, k=k, alpha=alpha, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(*, weights: Params, lr: float = 1e-4, weight_decay: float = 0.01, beta1: float = 0.9, beta2: float = 0.999) -> Optimizer:
    """AdamW (torch.optim), decoupled weight decay."""
    return torch.optim.AdamW(weights, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2))


@OPTIMIZERS.register("lion")
def lion(*, weights: Params, lr: float = 3e-5, weight_decay: float = 0.1, beta1: float = 0.9, beta2: float = 0.99) -> Optimizer:
    """Lion (pytorch-optimizer); sign updates, so a ~3-10x smaller lr and larger decay than AdamW."""
    from pytorch_optimizer import Lion

    return Lion(weights, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2))


@OPTIMIZERS.register("madgrad")
def madgrad(*, weights: Params, lr: float = 1e-4, momentum: float = 0.9, weight_decay: float = 0.0) -> Optimizer:
    """MADGRAD (pytorch-optimizer), dual-averaged adaptive momentum."""
    from pytorch_optimizer import MADGRAD

    return MADGRAD(weights, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("radam")
def radam(*, weights: Params, lr: float = 1e-4, weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
          decoupled: bool = True) -> Optimizer:
    """RAdam (torch.optim), rectified Adam; decoupled: AdamW-style weight decay."""
    return torch.optim.RAdam(weights, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2),
                             decoupled_weight_decay=decoupled)


_LOOKAHEAD_BASES = ("radam", "adamw")


@OPTIMIZERS.register("lookahead")
def lookahead(*, weights: Params, lr: float = 1e-4, base: str = "radam", k: int = 5, alpha: float = 0.5,
              weight_decay: float = 0.0) -> Optimizer:
    """Lookahead (pytorch-optimizer; Zhang et al. 2019) around RAdam or AdamW (torch.optim): every
    k steps the weights move alpha of the way to where the base optimizer took them. With base
    radam this is the 1st place's RAdam + Lookahead (Ranger is the same pairing in another package).
    alpha 1 makes Lookahead a no-op: the base optimizer alone is returned (an ablation arm that keeps
    the recipe's learning rate and weight decay)."""
    from pytorch_optimizer import Lookahead

    if base not in _LOOKAHEAD_BASES:
        raise unknown("Lookahead base optimizer", base, _LOOKAHEAD_BASES)
    if k < 1 or not 0.0 < alpha <= 1.0:
        raise UserError(f"lookahead: expected k >= 1 and alpha in (0, 1], got k={k}, alpha={alpha}")
    inner: Optimizer = torch.optim.RAdam(weights, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=True) \
        if base == "radam" else torch.optim.AdamW(weights, lr=lr, weight_decay=weight_decay)
    return inner if alpha == 1.0 else Lookahead(inner, k=k, alpha=alpha)


_SAM_BASES = ("adamw", "ranger", "lion")


@OPTIMIZERS.register("sam", tags=("two_pass",))
def sam(*, weights: Params, lr: float = 1e-4, rho: float = 0.05, adaptive: bool = False, base: str = "adamw",
        weight_decay: float = 0.01) -> Optimizer:
    """SAM (pytorch-optimizer) around a base optimizer: sharpness-aware, two passes per step."""
    from pytorch_optimizer import SAM, Lion

    weights = list(weights)
    classes: dict[str, Callable[..., Optimizer]] = {"adamw": torch.optim.AdamW, "ranger": _ranger_class(weights), "lion": Lion}
    if base not in classes:
        raise unknown("SAM base optimizer", base, _SAM_BASES)
    return SAM(weights, base_optimizer=classes[base], rho=rho, adaptive=adaptive, lr=lr, weight_decay=weight_decay)


def _check_by(by: str) -> None:
    if by not in ("epoch", "step"):
        raise unknown("schedule granularity (by)", by, ("epoch", "step"))


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int, warmup: float = 0.1,
                  start_factor: float = 0.01, end_factor: float = 0.001, by: str = "step") -> LambdaLR:
    """Linear warmup from lr*start_factor to lr, then cosine to lr*end_factor (baseline 1e-6 -> 1e-4 -> 1e-7).

    `warmup` is the fraction of training spent warming up; `by` = "step" updates every batch,
    "epoch" holds the rate constant within an epoch. The trainer calls `scheduler.step()` per batch.
    """
    _check_by(by)
    total = max(1, epochs * steps_per_epoch)
    warm = int(round(warmup * total))

    def factor(step: int) -> float:
        if by == "epoch":  # evaluate the curve at the start of the step's epoch
            step = (step // steps_per_epoch) * steps_per_epoch
        if step < warm:
            return start_factor + (1.0 - start_factor) * step / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


@SCHEDULES.register("constant")
def constant(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> LambdaLR:
    """A constant learning rate (the optimizer's lr throughout)."""
    return LambdaLR(optimizer, lambda step: 1.0)
