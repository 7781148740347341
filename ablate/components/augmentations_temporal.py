"""The time-axis augmentations and the batch-level mixup; registered in augmentations.py.

Time-axis functions take a RawBatch and the item's Draws (draw 0 is taken: it decides whether the
item is augmented) and return a new RawBatch; frames are selected through index maps, so the
statistics of the landmarks that are not carried follow exactly. The padded length of the result
is known on the host (no wait for the device): frame_drop keeps it, speed takes it from the
slowest factor drawn for the batch (the draws are made on the host).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ablate.components._random import Draws
from ablate.components._rawbatch import PARTS, RawBatch
from ablate.device import from_host


def random_span(lengths: Tensor, frac: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(start, length) [B] of a run of frames per item: length = round(frac * T) within [1, T],
    start uniform (from u in [0, 1)) among the places it fits. Items with T = 0 get length 0."""
    t = lengths.double()
    length = torch.minimum(torch.round(frac * t).clamp(min=1), t)
    start = torch.floor(u * (t - length + 1)).clamp(min=0)
    return start.long(), length.long()


def drop_frames(batch: RawBatch, d: Draws, rate: tuple[float, float]) -> RawBatch:
    """Drop each frame with probability r (r drawn from `rate`); one random frame always stays."""
    r = d.between(1, rate).float()
    t = torch.arange(batch.frames, device=r.device)[None]
    own = t < batch.lengths[:, None]
    keep = (d.field_uniform(t) >= r[:, None]) & own
    fallback = torch.floor(d.u(2) * batch.lengths.double()).long()
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, own & (t == fallback[:, None]))
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept frames first, in order
    return batch.take(order, keep.sum(dim=1))


def resample(batch: RawBatch, d: Draws, factor: tuple[float, float]) -> RawBatch:
    """Play the clip f times faster (f from `factor`): new frame k is input frame round(k * f),
    k = 0 .. floor((T - 1) / f); so f = 1 is the identity and f = 2 takes every other frame."""
    f = d.between(1, factor)
    slowest = float(d.host_between(1, factor).min())  # the same draws, on the host: no wait
    frames = int(math.floor(max(batch.frames - 1, 0) / slowest + 1e-9)) + 1
    new_len = torch.where(batch.lengths > 0, torch.floor((batch.lengths - 1).clamp(min=0) / f).long() + 1, 0)
    k = torch.arange(frames, device=f.device, dtype=torch.float64)[None]
    source = torch.floor(k * f[:, None] + 0.5).long()
    return batch.take(torch.minimum(source, (batch.lengths - 1).clamp(min=0)[:, None]), new_len)


def mask_span(batch: RawBatch, d: Draws, span: tuple[float, float]) -> RawBatch:
    """Remove every landmark in a random run of frames (a fraction `span` of T); at least one
    frame is left untouched, so a 1-frame clip comes back unchanged."""
    start, length = random_span(batch.lengths, d.between(1, span), d.u(2))
    length = torch.minimum(length, (batch.lengths - 1).clamp(min=0))
    t = torch.arange(batch.frames, device=start.device)[None]
    frames = (t >= start[:, None]) & (t < (start + length)[:, None])
    everything = torch.ones(batch.points.shape[0], batch.points.shape[3], dtype=torch.bool, device=start.device)
    return batch.blank(frames, everything, torch.zeros(batch.points.shape[0], PARTS, dtype=torch.float64, device=start.device))


class Mixup:
    """Batch-level mixup: mix each chosen sample with a random partner of the batch.

    __call__(x [B, T, F], mask [B, T] True = valid frame, y [B], gen) returns
    (x * lam + x[perm] * (1 - lam), mask | mask[perm], y[perm], lam [B]); the trainer's loss is
    lam * L(y) + (1 - lam) * L(y[perm]). A sample is mixed with probability p; the others keep
    their x and mask and get lam = 1. lam ~ Beta(alpha, alpha).
    """

    def __init__(self, p: float, alpha: float) -> None:
        self.p = p
        self.alpha = alpha

    def __call__(
        self, x: Tensor, mask: Tensor, y: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b = x.shape[0]
        perm = torch.randperm(b, generator=gen, device=gen.device)
        chosen = torch.rand(b, generator=gen, device=gen.device) < self.p
        # torch has no Beta sampler that takes a Generator: seed numpy's from it, deterministically
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        beta = torch.from_numpy(np.random.default_rng(seed).beta(self.alpha, self.alpha, size=b))
        # one copy to the device, from page-locked memory: the step does not wait for it
        packed = torch.cat([perm.double().cpu(), chosen.double().cpu(), beta])
        packed = from_host(packed, x.device)
        perm, chosen = packed[:b].long(), packed[b : 2 * b] > 0
        lam = torch.where(chosen, packed[2 * b :].float(), 1.0)
        shape = (b,) + (1,) * (x.dim() - 1)
        lam_x = lam.to(x.dtype).view(shape)
        x_out = torch.where(chosen.view(shape), x * lam_x + x[perm] * (1 - lam_x), x)
        mask_out = torch.where(chosen.view((b,) + (1,) * (mask.dim() - 1)), mask | mask[perm], mask)
        return x_out, mask_out, y[perm], lam

    def __repr__(self) -> str:
        return f"Mixup(p={self.p}, alpha={self.alpha})"
