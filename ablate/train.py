"""Train one configuration on one fold: `train_fold(config, data, fold) -> FoldResult`.

Knows nothing of Optuna. Reproducible on CPU: the same config, fold and seed give the same numbers
(model init, batch order and augmentations all derive from `config.seed`).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ablate.batching import BucketBatchSampler, SequenceDataset, pad_collate, precompute
from ablate.components import OPTIMIZERS, SCHEDULES
from ablate.config import Config
from ablate.data.cache import Cache
from ablate.errors import UserError
from ablate.parts import Parts, build_augmentations, build_parts


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
    amp: str = "off"
    parts: Parts | None = None  # the trained parts (weights of the last epoch), when asked for
    val_indices: np.ndarray | None = None  # cache indices of the validation sequences
    val_probs: np.ndarray | None = None  # last-epoch softmax on them, [n_val, C], when asked for

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (no weights or arrays)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("parts", "val_indices", "val_probs", "epochs")}
        d["epochs"] = [asdict(e) for e in self.epochs]
        return d


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def _cpu_bf16_helps() -> bool:
    """bf16 autocast pays on CPUs with AMX tiles; with AVX512-BF16 alone it measured no faster here
    (253 vs 260 samples/s on the quick preset), so fp32 keeps full precision there. A CPU flag, not
    a timing: the choice, and so the numbers, must not depend on how busy the machine is."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read().split()
    except OSError:
        return False


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for full fp32."""
    if name == "off":
        return None
    if name == "fp16":
        return torch.float16
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        raise UserError(f"amp {name!r}: expected auto, off, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_bf16_helps() else None


def _loader_workers(requested: int, device: torch.device) -> int:
    if requested >= 0:
        return requested
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        # 2 cores: a loader worker only competes with the model's threads (measured 218 vs 253
        # samples/s on the quick preset); with more cores it overlaps feature computation.
        return 0 if cores <= 2 else min(4, cores // 2)
    return min(8, cores)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def train_fold(
    config: Config,
    data: Cache,
    fold: int,
    *,
    keep_model: bool = False,
    keep_predictions: bool = False,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool | None = None,
) -> FoldResult:
    """Train `config` on every fold but `fold` of the data's grouped folds; validate on `fold`."""
    t_start = time.perf_counter()
    folds = data.folds(config.folds, config.fold_seed, config.fold_kind)
    if not 0 <= fold < config.folds:
        raise UserError(f"fold {fold}: expected 0..{config.folds - 1}")
    train_idx, val_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    device = resolve_device(config.device)
    amp = resolve_amp(config.amp, device)

    torch.manual_seed(config.seed)
    parts = build_parts(config, data.num_classes)
    parts.model.to(device)
    parts.head.to(device)
    augs = build_augmentations(config)
    params = list(parts.model.parameters()) + list(parts.head.parameters())
    opt_entry = OPTIMIZERS.get(config.optimizer.name)
    optimizer = OPTIMIZERS.build(config.optimizer.name, config.optimizer.params, where="optimizer", weights=params)
    two_pass = "two_pass" in opt_entry.tags
    if two_pass and amp is torch.float16:
        amp = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else None
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None

    workers = _loader_workers(config.workers, device)
    train_set = SequenceDataset(data, train_idx, parts.features, augs.sequence, seed=config.seed)
    val_set = SequenceDataset(data, val_idx, parts.features)
    train_sampler = BucketBatchSampler(data.lengths[train_idx], config.batch_size, shuffle=True,
                                       seed=config.seed, max_batches=config.max_train_batches)
    val_sampler = BucketBatchSampler(data.lengths[val_idx], config.batch_size, shuffle=False)
    # loaders draw their worker seeds from their own generator, not from the global one that
    # dropout uses: the numbers must not depend on how many workers load the data
    loader_args: dict[str, Any] = {"collate_fn": pad_collate, "num_workers": workers,
                                   "pin_memory": device.type == "cuda",
                                   "generator": torch.Generator().manual_seed(config.seed)}
    if workers:
        loader_args |= {"worker_init_fn": _worker_init, "prefetch_factor": 4, "persistent_workers": True,
                        # fork where there is fork: a study worker may itself be a spawned process
                        "multiprocessing_context": "fork" if "fork" in mp.get_all_start_methods() else None}
    val_data = precompute(val_set, loader_args) or val_set
    train_data = precompute(train_set, loader_args)  # only without augmentations: then fixed
    train_loader = (DataLoader(train_data, batch_sampler=train_sampler, collate_fn=pad_collate) if train_data
                    else DataLoader(train_set, batch_sampler=train_sampler, **loader_args))
    val_loader = DataLoader(val_data, batch_sampler=val_sampler,
                            **(loader_args if val_data is val_set else {"collate_fn": pad_collate}))
    # SAM steps its base optimizer (they share param_groups); the schedule must follow that step
    stepped = optimizer.base_optimizer if two_pass else optimizer
    scheduler = SCHEDULES.build(config.schedule.name, config.schedule.params, where="schedule", optimizer=stepped,
                                epochs=config.epochs, steps_per_epoch=len(train_sampler))

    result = FoldResult(fold=fold, n_train=len(train_idx), n_val=len(val_idx), device=str(device),
                        amp=str(amp).replace("torch.", "") if amp else "off")
    gen = torch.Generator().manual_seed(config.seed)
    train_time, train_samples, best, since_best = 0.0, 0, -1.0, 0
    show = progress if progress is not None else None  # None: tqdm shows bars only on a terminal
    bar = tqdm(total=config.epochs, desc=f"fold {fold}", unit="epoch", disable=None if show is None else not show, leave=False)
    step = _Step(parts, optimizer, scheduler, scaler, amp, device, config.grad_clip, two_pass, augs.batch, gen)
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        train_sampler.epoch = epoch
        parts.model.train()
        parts.head.train()
        losses = []
        for b, (x, mask, y) in enumerate(tqdm(train_loader, desc="batches", leave=False, disable=None if show is None else not show)):
            loss = step(x, mask, y)
            if not np.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss} at epoch {epoch}, batch {b} "
                                       f"(lr {optimizer.param_groups[0]['lr']:.3g}); fold {fold} stopped")
            losses.append(loss)
            train_samples += len(y)
        train_time += time.perf_counter() - t0
        val_loss, val_acc, probs = evaluate(parts, val_loader, device, amp, keep_predictions and epoch == config.epochs - 1)
        stats = EpochStats(epoch, float(np.mean(losses)) if losses else float("nan"), val_loss, val_acc,
                           float(optimizer.param_groups[0]["lr"]), time.perf_counter() - t0)
        result.epochs.append(stats)
        bar.update(1)
        bar.set_postfix(loss=f"{stats.train_loss:.3f}", acc=f"{val_acc:.3f}")
        if on_epoch:
            on_epoch(stats)
        if val_acc > best:
            best, since_best, result.best_acc, result.best_epoch = val_acc, 0, val_acc, epoch
        else:
            since_best += 1
        if config.early_stopping and since_best >= config.early_stopping:
            result.stopped = "early_stopping"
            break
    bar.close()
    result.last_acc = result.epochs[-1].val_acc
    result.seconds = time.perf_counter() - t_start
    result.samples_per_sec = train_samples / train_time if train_time else 0.0
    if keep_model:
        result.parts = parts
    if keep_predictions:
        if probs is None:  # stopped early: predict with the final weights now
            _, _, probs = evaluate(parts, val_loader, device, amp, True)
        order = np.concatenate(list(val_sampler._batches()))
        result.val_indices = val_idx[order]
        result.val_probs = probs
    return result


class _Step:
    """One optimisation step (two passes for SAM), under autocast, with clipping."""

    def __init__(self, parts: Parts, optimizer: Any, scheduler: Any, scaler: Any, amp: torch.dtype | None,
                 device: torch.device, clip: float, two_pass: bool, batch_augs: list[Any], gen: torch.Generator) -> None:
        self.parts, self.opt, self.sched, self.scaler = parts, optimizer, scheduler, scaler
        self.amp, self.device, self.clip, self.two_pass = amp, device, clip, two_pass
        self.batch_augs, self.gen = batch_augs, gen
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def _loss(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, y2: torch.Tensor | None, lam: torch.Tensor | None) -> torch.Tensor:
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
        with ctx:
            emb = self.parts.model(x, mask)
        emb = emb.float()  # margins and softmax in fp32
        if y2 is None or lam is None:
            return self.parts.head(emb, y)
        return self.parts.head.mixed(emb, y, y2, lam.to(emb.device).float())  # mixup

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> float:
        y2 = lam = None
        for aug in self.batch_augs:
            x, mask, y2, lam = aug(x, mask, y, self.gen)
        x, mask, y = (t.to(self.device, non_blocking=True) for t in (x, mask, y))
        y2 = y2.to(self.device) if y2 is not None else None
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(x, mask, y, y2, lam)
        value = float(loss.detach())
        if not np.isfinite(value):
            return value
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            self._clip()
            self.scaler.step(self.opt)
            self.scaler.update()
        elif self.two_pass:
            loss.backward()
            self._clip()
            self.opt.first_step(zero_grad=True)  # climb to the worst nearby weights
            self._loss(x, mask, y, y2, lam).backward()
            self._clip()
            self.opt.second_step(zero_grad=True)  # step from the original weights with that gradient
        else:
            loss.backward()
            self._clip()
            self.opt.step()
        self.sched.step()
        return value

    def _clip(self) -> None:
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)


@torch.no_grad()
def evaluate(parts: Parts, loader: DataLoader, device: torch.device, amp: torch.dtype | None,
             keep: bool = False) -> tuple[float, float, np.ndarray | None]:
    """(mean loss, accuracy, softmax probabilities in loader order if `keep`) on a loader."""
    parts.model.eval()
    parts.head.eval()
    total_loss, correct, n, kept = 0.0, 0, 0, []
    for x, mask, y in loader:
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            emb = parts.model(x, mask)
        emb = emb.float()
        logits = parts.head.logits(emb)
        total_loss += float(parts.head(emb, y)) * len(y)
        correct += int((logits.argmax(-1) == y).sum())
        n += len(y)
        if keep:
            kept.append(torch.softmax(logits, -1).cpu().numpy())
    return total_loss / max(n, 1), correct / max(n, 1), (np.concatenate(kept) if keep else None)
