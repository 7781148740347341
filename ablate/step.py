"""One optimisation step (`Step`) and the two weight-level tricks that act around it: adversarial
weight perturbation (`Awp`) and an exponential moving average of the weights (`Ema`).

The step runs under autocast, with a GradScaler for fp16, two passes for SAM, clipping, and AWP's
second pass when it is on; it returns the loss as a device tensor (no wait for the device). On CUDA
it can run as one graph (stepgraphs.py), with only the schedule, Lookahead's syncs and the moving
average launched between replays.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Any

import torch
from torch import nn

from ablate.graphs import GraphedModel
from ablate.parts import Parts
from ablate.stepgraphs import StepGraphs, after_step

_NORM_FLOOR = 1e-12  # added to a gradient's norm before dividing by it: a zero gradient moves nothing


class Awp:
    """Adversarial weight perturbation (Wu et al. 2020), in the form the competition's 1st place
    used: from epoch floor(start * epochs) on, each step first takes the gradient at the weights,
    moves every trained tensor by `size` (an L2 length) along its own normalised gradient, takes
    the gradient there, puts the weights back exactly (a saved copy) and steps with that second
    gradient. Costs a second forward and backward pass per step while on. With SAM, AWP's gradient
    is the one SAM climbs along (three passes per step)."""

    def __init__(self, size: float, start: float, epochs: int, params: list[nn.Parameter]) -> None:
        self.size = size
        self.start = min(math.floor(start * epochs + 1e-9), epochs - 1)  # 0.07 * 100 = 7.000000000000001
        self.params = params
        self.on = False

    def set(self, epoch: int) -> None:
        self.on = self.size > 0 and epoch >= self.start

    @torch.no_grad()
    def perturb(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Move the weights up their gradients; returns what `restore` needs. A scaled (fp16)
        gradient gives the same direction; an overflowing one makes the second loss non-finite,
        and the GradScaler then skips the step as usual."""
        saved = []
        for p in self.params:
            if p.grad is None:
                continue
            saved.append((p, p.detach().clone()))
            g = p.grad.float()
            p.add_((g * (self.size / (g.norm() + _NORM_FLOOR))).to(p.dtype))
        return saved

    @staticmethod
    @torch.no_grad()
    def restore(saved: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        for p, original in saved:
            p.copy_(original)


class Ema:
    """An exponential moving average of the model's and the head's weights and floating-point
    buffers, updated after every step; validation uses it, and at the end of training it replaces
    the trained weights, so it is what is kept and exported. decay 0: no average (every method is
    then a no-op).

    The decay of update n is min(decay, (1 + n) / (10 + n)) (TensorFlow's ExponentialMovingAverage
    with num_updates): at 0.999 a short run would otherwise be averaged with its untrained start.
    Written here rather than with torch.optim.swa_utils.AveragedModel, which has no such warm-up
    and reads its update count from the device on every step (a wait for the GPU)."""

    def __init__(self, parts: Parts, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.tracked = nn.ModuleDict({"model": parts.model, "head": parts.head})
        self.average = copy.deepcopy(self.tracked).eval() if decay > 0 else None
        if self.average is not None:
            self.average.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        if self.average is None:
            return
        weight = 1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        mine = [*self.average.parameters(), *self.average.buffers()]
        live = [*self.tracked.parameters(), *self.tracked.buffers()]
        floats = [(a, b) for a, b in zip(mine, live) if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [b.detach() for _, b in floats], weight)
        for a, b in zip(mine, live):
            if not a.is_floating_point():
                a.copy_(b)
        self.updates += 1

    @torch.no_grad()
    def restart(self) -> None:
        """Start the average again from the current weights, warm-up included (when the recipe's
        head takes over after a softmax pretraining stage: its start is untrained)."""
        if self.average is not None:
            self.average.load_state_dict(self.tracked.state_dict())
            self.updates = 0

    def parts(self, parts: Parts) -> Parts:
        """What to validate: the averaged weights (the recipe's head), else `parts` itself."""
        if self.average is None or parts.head is not self.tracked["head"]:  # a pretraining head: no average of it
            return parts
        return Parts(parts.features, self.average["model"], self.average["head"])

    def copy_into(self, parts: Parts) -> None:
        """Make the averaged weights the trained ones (after the last epoch)."""
        if self.average is not None:
            parts.model.load_state_dict(self.average["model"].state_dict())
            parts.head.load_state_dict(self.average["head"].state_dict())


class Step:
    """One optimisation step (two passes for SAM, a GradScaler for fp16, AWP's second pass when on),
    under autocast, with clipping, then the EMA update. Returns the loss as a device tensor.
    `whole`: the step captured whole where it can be (stepgraphs.py; train.whole_steps says when)."""

    def __init__(self, parts: Parts, model: nn.Module | GraphedModel, optimizer: Any, scheduler: Any, scaler: Any,
                 amp: torch.dtype | None, device: torch.device, clip: float, two_pass: bool, batch_augs: list[Any],
                 gen: torch.Generator, awp: Awp | None = None, ema: Ema | None = None, whole: bool = False) -> None:
        self.parts, self.model, self.opt, self.sched, self.scaler = parts, model, optimizer, scheduler, scaler
        self.amp, self.device, self.clip, self.two_pass = amp, device, clip, two_pass
        self.batch_augs, self.gen, self.awp, self.ema = batch_augs, gen, awp, ema
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.whole = StepGraphs(self._whole_body, optimizer, parts.model, device) if whole else None
        # a graph is captured under autocast, which must then keep no cache of cast weights
        self.autocast_cache = not isinstance(model, GraphedModel) and self.whole is None

    def _loss(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, y2: torch.Tensor | None,
              lam: torch.Tensor | None, model: Any = None) -> torch.Tensor:
        ctx = torch.autocast(self.device.type, dtype=self.amp, cache_enabled=self.autocast_cache) \
            if self.amp else contextlib.nullcontext()
        with ctx:
            emb = (model if model is not None else self.model)(x, mask)
        emb = emb.float()  # margins and softmax in fp32
        if y2 is None or lam is None:
            return self.parts.head(emb, y)
        return self.parts.head.mixed(emb, y, y2, lam.float())  # mixup

    def _whole_body(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, y2: torch.Tensor | None,
                    lam: torch.Tensor | None) -> torch.Tensor:
        """What a step's graph runs: this step's loss (the model itself, not its graphs), backward,
        clipping and the update of the optimizer inside (Lookahead's syncs come after a replay).
        Gradients set to None first, as every step starts: in a graph only its capture does that
        (no device work), and the replays rewrite the gradients its backward made."""
        assert self.whole is not None
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(x, mask, y, y2, lam, self.parts.model)
        loss.backward()
        self._clip()
        self.whole.inner.step()
        return loss.detach()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, mask, y = (t.to(self.device, non_blocking=True) for t in (x, mask, y))
        y2 = lam = None
        for aug in self.batch_augs:  # on the device, after the one copy
            x, mask, y2, lam = aug(x, mask, y, self.gen)
        model = self.model  # the pass run as it is: the model's graphs, where they are on
        if self.whole is not None:
            if self.awp is not None and self.awp.on:
                self.whole.close()  # AWP stays on to the end: its steps run with the model's graphs
            else:
                replayed = self.whole(x, mask, y, y2, lam, self.parts.head)
                if replayed is not None:
                    return self._replayed(replayed)
                if not self.whole.failed:  # no room for this shape's graph: none for the model's either
                    model = self.parts.model
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(x, mask, y, y2, lam, model)
        self._backward(loss)
        if self.awp is not None and self.awp.on:  # the step uses the gradient at the perturbed weights
            saved = self.awp.perturb()
            self.opt.zero_grad(set_to_none=True)
            self._backward(self._loss(x, mask, y, y2, lam, model))
            self.awp.restore(saved)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
            self._clip()
            self.scaler.step(self.opt)
            self.scaler.update()
        elif self.two_pass:
            self._clip()
            self.opt.first_step(zero_grad=True)  # climb to the worst nearby weights
            self._loss(x, mask, y, y2, lam, model).backward()
            self._clip()
            self.opt.second_step(zero_grad=True)  # step from the original weights with that gradient
        else:
            self._clip()
            self.opt.step()
        self._after()
        return loss.detach()

    def _replayed(self, loss: torch.Tensor) -> torch.Tensor:
        """After a replay: what the graph left out (Lookahead's syncs, the schedule, the average)."""
        after_step(self.opt)
        if self.sched.last_epoch > 0:
            self._after()
            return loss
        with warnings.catch_warnings():  # its first step: the update ran in the graph, unseen by the schedule
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self._after()
        return loss

    def _after(self) -> None:
        self.sched.step()
        if self.ema is not None:
            self.ema.update()

    def _clip(self) -> None:
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)

    def graphs(self) -> str:
        """The fold's record of its CUDA graphs: the whole steps' (StepGraphs.state) and the
        model's (GraphedModel.state), joined by "; " where both ran; "" for none."""
        states = [self.whole.state() if self.whole is not None else "",
                  self.model.state() if isinstance(self.model, GraphedModel) else ""]
        return "; ".join(s for s in states if s)

    def close(self) -> None:
        """At the end of a fold: let go of the graphs and their memory."""
        if self.whole is not None:
            self.whole.close()
        if isinstance(self.model, GraphedModel):
            self.model.close()
