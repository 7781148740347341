"""Train one configuration on one fold: `train_fold(config, data, fold) -> FoldResult`.

Knows nothing of Optuna. Reproducible on CPU: the same config, fold and seed give the same numbers
(model init, batch order and augmentations all derive from `config.seed`, the fold seed of the
repeat and the fold: `run_seed`, so no two folds share their luck and two arms share theirs fold by fold). On a GPU, only with
`deterministic: true` (slower), because cuDNN and cuBLAS pick non-deterministic kernels otherwise.
The parts: `Feed` (feed.py: batches made on the device), `_optimizer` (optimizer, schedule, scaler), `Step` (step.py:
one step per optimizer kind, with AWP and the weights' moving average), `_epoch` (one pass, losses kept on the
device), `evaluate`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ablate.components import LOSSES, MODELS, OPTIMIZERS, SCHEDULES
from ablate.components._random import run_seed
from ablate.config import Config
from ablate.data.cache import Cache
from ablate.data.drop import training_items
from ablate.device import (compiled, gpu_name, keep_freed_memory, resolve_amp, resolve_device, set_deterministic,
                           use_device)
from ablate.errors import UserError
from ablate.feed import Batch, Feed
from ablate.graphs import GraphedModel
from ablate.parts import LateDropout, Parts, Pretraining, build_augmentations, build_parts
from ablate.step import Awp, Ema, Step
from ablate.stepgraphs import capturable

CHECK_EVERY = 50  # steps between checks of the loss for NaN/inf (each check waits for the device)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped instead of going on with garbage."""


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    train_rate: float = 0.0  # training sequences per second of this epoch's training phase


@dataclass
class FoldResult:
    fold: int
    epochs: list[EpochStats] = field(default_factory=list)
    best_acc: float = 0.0
    best_epoch: int = -1
    last_acc: float = 0.0
    seconds: float = 0.0
    samples_per_sec: float = 0.0  # training samples per second of training-phase time
    n_train: int = 0
    n_val: int = 0
    stopped: str = "completed"  # or "early_stopping"
    device: str = "cpu"
    gpu: str = ""  # the GPU's name, on CUDA
    amp: str = "off"  # the precision the fold actually ran at
    graphs: str = ""  # on CUDA: whether its steps, or its model, ran in CUDA graphs (Step.graphs)
    parts: Parts | None = None  # the trained parts (weights of the last epoch), when asked for
    val_indices: np.ndarray | None = None  # cache indices of the validation sequences
    val_probs: np.ndarray | None = None  # last-epoch softmax on them, [n_val, C], when asked for

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (no weights or arrays)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("parts", "val_indices", "val_probs", "epochs")}
        d["epochs"] = [asdict(e) for e in self.epochs]
        return d


def _optimizer(config: Config, parts: Parts, steps_per_epoch: int, amp: torch.dtype | None,
               device: torch.device, extra: list[torch.nn.Parameter] | None = None) -> tuple[Any, Any, Any, bool, torch.dtype | None]:
    """(optimizer, schedule, GradScaler or None, two passes?, the precision to run at); `extra`:
    more weights to train (a pretraining head). With `extra`, the weights come in three parameter
    groups (model, the recipe's head, `extra`), so that `restart_head_steps` can reach the head."""
    model, head = list(parts.model.parameters()), list(parts.head.parameters())
    params: list[Any] = [{"params": model}, {"params": head}, {"params": list(extra)}] if extra else model + head
    optimizer = OPTIMIZERS.build(config.optimizer.name, config.optimizer.params, where="optimizer", weights=params)
    two_pass = "two_pass" in OPTIMIZERS.get(config.optimizer.name).tags
    if two_pass and amp is torch.float16:  # SAM's two passes do not go through a GradScaler
        amp = torch.bfloat16 if device.type == "cpu" or resolve_amp("auto", device) is torch.bfloat16 else None
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None
    # SAM steps its base optimizer (they share param_groups); the schedule must follow that step
    stepped = optimizer.base_optimizer if two_pass else optimizer
    scheduler = SCHEDULES.build(config.schedule.name, config.schedule.params, where="schedule", optimizer=stepped,
                                epochs=config.epochs, steps_per_epoch=steps_per_epoch)
    return optimizer, scheduler, scaler, two_pass, amp


def _trained(config: Config, model: torch.nn.Module, device: torch.device) -> torch.nn.Module | GraphedModel:
    """What the training step calls: the model, or on CUDA with `cuda_graphs` its graphs (not
    with `compile`, which is then the model's own way of running)."""
    if config.cuda_graphs and device.type == "cuda" and not config.compile:
        return GraphedModel(model)
    return model


def whole_steps(config: Config, device: torch.device, optimizer: Any, scaler: Any, two_pass: bool) -> bool:
    """Whether training steps are captured whole (stepgraphs.py): with `cuda_graphs` on CUDA (not
    with `compile`), one pass per step (not SAM), no GradScaler (fp16), an optimizer whose update
    can run in a graph, a loss that does not ask the host mid-step (tag "host") and not AWP from
    the first epoch (its steps are not captured). Otherwise only the model runs in graphs (`_trained`)."""
    awp_throughout = config.awp > 0 and Awp(config.awp, config.awp_from, config.epochs, []).start == 0
    return (config.cuda_graphs and device.type == "cuda" and not config.compile and scaler is None and not two_pass
            and not awp_throughout and capturable(optimizer) is not None
            and "host" not in LOSSES.get(config.loss.name).tags)


def restart_head_steps(optimizer: Any) -> None:
    """When the recipe's head starts after pretraining: an optimizer that counts steps per
    parameter group would take the untrained head for as old as the model. Lookahead (the Ranger
    on a GPU) counts to its next sync per group, pytorch-optimizer's optimizers count their steps
    there: the head's group (the second, see `_optimizer`) starts again from 0, as a count per
    tensor (pytorch-ranger, torch.optim's RAdam) does by itself."""
    group = optimizer.param_groups[1]
    for count in ("step", "counter"):
        if count in group:
            group[count] = 0


def train_fold(
    config: Config,
    data: Cache,
    fold: int,
    *,
    keep_model: bool = False,
    keep_predictions: bool = False,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool | None = None,
    sharing: int = 1,
) -> FoldResult:
    """Train `config` on every fold but `fold` of the data's grouped folds; validate on `fold`.
    `fold` = config.folds: train on every sequence, validate on none (the epochs'
    validation numbers are NaN; the random streams are those of a fold index no fold has).
    `sharing`: study workers on this device (they divide its memory for resident data)."""
    t_start = time.perf_counter()
    folds = data.folds(config.folds, config.fold_seed, config.fold_kind)
    if not 0 <= fold <= config.folds:
        raise UserError(f"fold {fold}: expected 0..{config.folds - 1} (or {config.folds}: all the data)")
    full = fold == config.folds
    if full and (config.early_stopping or keep_predictions):
        raise UserError("training on all the data leaves nothing to validate on: early_stopping must be 0 "
                        "(and there are no held-out predictions to keep)")
    train_idx, val_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    train_idx = training_items(train_idx, config, data, fold)  # validation keeps everyone
    device = resolve_device(config.device)
    use_device(device)
    if device.type == "cpu":
        keep_freed_memory()
    set_deterministic(config.deterministic, device)
    amp = resolve_amp(config.amp, device, rnn="rnn" in MODELS.get(config.model.name).tags)

    seed = run_seed(config.seed, config.fold_seed, fold)  # each fold and repeat its own luck
    torch.manual_seed(seed)
    parts = build_parts(config, data.num_classes)
    parts.model.to(device)
    parts.head.to(device)
    pre = Pretraining(parts, config.pretrain_ce, config.epochs, data.num_classes)
    pre_weights = list(pre.head.to(device).parameters()) if pre.head is not None else []
    augs = build_augmentations(config)
    feed = Feed(config, data, fold, train_idx, val_idx, parts.features, augs, device, sharing)
    optimizer, scheduler, scaler, two_pass, amp = _optimizer(config, parts, len(feed.train_sampler), amp, device,
                                                             pre_weights)
    model = compiled(parts.model) if config.compile else parts.model
    awp = Awp(config.awp, config.awp_from, config.epochs, [p for g in optimizer.param_groups for p in g["params"]])
    ema = Ema(parts, config.ema)
    step = Step(parts, _trained(config, model, device), optimizer, scheduler, scaler, amp, device, config.grad_clip,
                two_pass, augs.batch, torch.Generator().manual_seed(seed), awp, ema,
                whole_steps(config, device, optimizer, scaler, two_pass))
    result = FoldResult(fold=fold, n_train=len(train_idx), n_val=len(val_idx), device=str(device),
                        gpu=gpu_name(device), amp=str(amp).replace("torch.", "") if amp else "off")
    train_time, train_samples, best, since_best, probs = 0.0, 0, -1.0, 0, None
    show = None if progress is None else not progress  # None: tqdm shows bars only on a terminal
    bar = tqdm(total=config.epochs, desc=f"fold {fold}", unit="epoch", disable=show, leave=False)
    late = LateDropout(parts.model, config.late_dropout, config.epochs)
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        late.set(epoch)
        awp.set(epoch)
        step.parts = pre.parts(parts, epoch)
        if epoch == pre.epochs and pre.epochs:  # the recipe's head starts now: early stopping counts from here
            best, since_best = -1.0, 0
            ema.restart()
            restart_head_steps(optimizer)
        loss, samples = _epoch(step, feed, epoch, fold, show)  # ends waiting for the device (the loss)
        t1 = time.perf_counter()
        train_time, train_samples = train_time + t1 - t0, train_samples + samples
        last = keep_predictions and epoch == config.epochs - 1
        checked = ema.parts(step.parts)  # the moving average, when there is one
        val_loss, val_acc, probs = evaluate(checked, feed.val(), device, amp, last,
                                            model if checked is step.parts else None) if not full else \
            (float("nan"), float("nan"), None)
        stats = EpochStats(epoch, loss, val_loss, val_acc, float(optimizer.param_groups[0]["lr"]),
                           time.perf_counter() - t0, samples / (t1 - t0))
        result.epochs.append(stats)
        bar.update(1)
        bar.set_postfix(loss=f"{stats.train_loss:.3f}", acc=f"{val_acc:.3f}")
        if on_epoch:
            on_epoch(stats)
        if val_acc > best:
            best, since_best, result.best_acc, result.best_epoch = val_acc, 0, val_acc, epoch
        else:
            since_best += 1
        if config.early_stopping and epoch >= pre.epochs and since_best >= config.early_stopping:
            result.stopped = "early_stopping"
            break
    bar.close()
    result.graphs = step.graphs()
    step.close()
    late.set(config.epochs)  # as built again, also when early stopping ended the fold in the off phase
    ema.copy_into(parts)  # what is kept, exported and predicted with below
    result.last_acc = result.epochs[-1].val_acc
    result.seconds = time.perf_counter() - t_start
    result.samples_per_sec = train_samples / train_time if train_time else 0.0
    if keep_model:
        result.parts = parts
    if keep_predictions:
        if probs is None:  # stopped early: predict with the final weights now
            _, _, probs = evaluate(parts, feed.val(), device, amp, True, model)
        result.val_indices = val_idx[np.concatenate(feed.val_sampler.batches())]
        result.val_probs = probs
    return result


def _epoch(step: Step, feed: Feed, epoch: int, fold: int, hide: bool | None) -> tuple[float, int]:
    """One pass over the training batches: (mean loss, samples). The losses stay on the device and
    are checked for NaN/inf every CHECK_EVERY steps and at the end, not after every step; the first
    bad batch is named."""
    step.parts.model.train()
    step.parts.head.train()
    losses: list[torch.Tensor] = []
    samples = 0
    made = feed.train(epoch)
    with contextlib.closing(made):  # a fold stopped mid-epoch stops the batch thread (feed.py) here
        for b, (x, mask, y) in enumerate(tqdm(made, total=len(feed.train_sampler), desc="batches",
                                              leave=False, disable=hide)):
            losses.append(step(x, mask, y))
            samples += len(y)
            if (b + 1) % CHECK_EVERY == 0:
                _check_finite(losses, b + 1 - CHECK_EVERY, epoch, fold, step)
    _check_finite(losses, len(losses) - len(losses) % CHECK_EVERY, epoch, fold, step)
    mean = float(torch.stack(losses).double().mean()) if losses else float("nan")
    return mean, samples


def _check_finite(losses: list[torch.Tensor], start: int, epoch: int, fold: int, step: Step) -> None:
    chunk = losses[start:]
    if not chunk:
        return
    bad = (~torch.isfinite(torch.stack(chunk))).nonzero()
    if len(bad):
        b = start + int(bad[0])
        raise TrainingDiverged(f"loss became {float(losses[b])} at epoch {epoch}, batch {b} "
                               f"(lr {step.opt.param_groups[0]['lr']:.3g}); fold {fold} stopped")


def bare_steps(config: Config, num_classes: int, shapes: list[tuple[int, int]], repeats: int = 1) -> float:
    """Sequences/s of the trainer's own step (model, loss, optimizer, schedule, precision) on
    random feature tensors made beforehand on the device, one batch per (size, frames) in
    `shapes`: the model's speed with input preparation taken away (benchmarks)."""
    device = resolve_device(config.device)
    use_device(device)
    if device.type == "cpu":
        keep_freed_memory()  # as train_fold does
    amp = resolve_amp(config.amp, device, rnn="rnn" in MODELS.get(config.model.name).tags)
    torch.manual_seed(config.seed)
    parts = build_parts(config, num_classes)
    parts.model.to(device)
    parts.head.to(device)
    optimizer, scheduler, scaler, two_pass, amp = _optimizer(config, parts, len(shapes) * (repeats + 1), amp, device)
    model = _trained(config, compiled(parts.model) if config.compile else parts.model, device)  # as train_fold runs it
    step = Step(parts, model, optimizer, scheduler, scaler, amp, device, config.grad_clip, two_pass, [],
                torch.Generator().manual_seed(config.seed), whole=whole_steps(config, device, optimizer, scaler, two_pass))
    width = int(getattr(parts.features, "out_dim"))
    batches = [(torch.randn(b, t, width, device=device), torch.ones(b, t, dtype=torch.bool, device=device),
                torch.randint(0, num_classes, (b,), device=device)) for b, t in shapes]
    parts.model.train()
    parts.head.train()
    losses = [step(*batch) for batch in batches]  # warm-up pass (and compiling, when asked for)
    float(torch.stack(losses).sum())
    t0 = time.perf_counter()
    for _ in range(repeats):
        losses = [step(*batch) for batch in batches]
    float(torch.stack(losses).sum())  # wait for the device
    rate = sum(b for b, _ in shapes) * repeats / (time.perf_counter() - t0)
    step.close()
    return rate


@torch.no_grad()
def evaluate(parts: Parts, loader: Iterable[Batch], device: torch.device, amp: torch.dtype | None,
             keep: bool = False, model: torch.nn.Module | None = None) -> tuple[float, float, np.ndarray | None]:
    """(mean loss, accuracy, softmax probabilities in loader order if `keep`) on a loader."""
    model = model if model is not None else parts.model
    parts.model.eval()
    parts.head.eval()
    total_loss, correct, n, kept = 0.0, 0, 0, []
    for x, mask, y in loader:
        x, mask, y = x.to(device, non_blocking=True), mask.to(device, non_blocking=True), y.to(device, non_blocking=True)
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            emb = model(x, mask)
        emb = emb.float()
        logits = parts.head.logits(emb)
        total_loss += float(parts.head(emb, y)) * len(y)
        correct += int((logits.argmax(-1) == y).sum())
        n += len(y)
        if keep:
            kept.append(torch.softmax(logits, -1).cpu().numpy())
    return total_loss / max(n, 1), correct / max(n, 1), (np.concatenate(kept) if keep else None)
