"""The time-axis augmentations and the batch-level mixup; registered in augmentations.py.

Sequence functions take raw landmarks x [T, 543, 3] float32 (NaN = undetected) and a numpy
Generator, return a new float32 array [T', 543, 3] with T' >= 1, and never write into x.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def random_span(t: int, frac: tuple[float, float], rng: np.random.Generator) -> tuple[int, int]:
    """(start, length) of a random run of frames, length = fraction (from `frac`) of t, >= 1."""
    length = int(np.clip(round(rng.uniform(*frac) * t), 1, t))
    start = int(rng.integers(0, t - length + 1))
    return start, length


def drop_frames(x: np.ndarray, rng: np.random.Generator, rate: tuple[float, float]) -> np.ndarray:
    """Drop each frame with probability r (r drawn from `rate`); one random frame always stays."""
    keep = rng.random(x.shape[0]) >= rng.uniform(*rate)
    if not keep.any():
        keep[rng.integers(x.shape[0])] = True
    return x[keep]


def resample(x: np.ndarray, rng: np.random.Generator, factor: tuple[float, float]) -> np.ndarray:
    """Play the clip f times faster (f from `factor`; f > 1 gives fewer frames) by linear interpolation.

    Output frame k sits at time k * f of the input, k = 0 .. floor((T - 1) / f). Between two input
    frames a landmark is interpolated, and stays NaN when it is NaN in either of them; at a whole
    input time it is that frame's value, so f = 1 is the identity.
    """
    f = rng.uniform(*factor)
    t = x.shape[0]
    s = np.arange(int((t - 1) / f) + 1) * f
    whole = np.isclose(s, np.round(s), rtol=0, atol=1e-6)
    s[whole] = np.round(s[whole])  # k * f that is an integer up to rounding error hits that frame
    i0 = np.minimum(np.floor(s).astype(np.int64), t - 1)
    i1 = np.minimum(i0 + 1, t - 1)
    w = (s - i0).astype(np.float32)[:, None, None]
    mixed = (1 - w) * x[i0] + w * x[i1]
    return np.where(w == 0, x[i0], mixed)


def mask_span(x: np.ndarray, rng: np.random.Generator, span: tuple[float, float]) -> np.ndarray:
    """Set a random run of frames (a fraction `span` of T) to NaN, as if nothing was detected.

    At least one frame is left untouched, so a 1-frame clip comes back unchanged.
    """
    out = x.copy()
    t = x.shape[0]
    if t > 1:
        start, length = random_span(t, span, rng)
        length = min(length, t - 1)
        out[start : start + length] = np.nan
    return out


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
        perm = torch.randperm(b, generator=gen, device=gen.device).to(x.device)
        chosen = (torch.rand(b, generator=gen, device=gen.device) < self.p).to(x.device)
        # torch has no Beta sampler that takes a Generator: seed numpy's from it, deterministically
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        beta = np.random.default_rng(seed).beta(self.alpha, self.alpha, size=b)
        lam = torch.where(chosen, torch.from_numpy(beta).to(x.device, torch.float32), 1.0)
        shape = (b,) + (1,) * (x.dim() - 1)
        lam_x = lam.to(x.dtype).view(shape)
        x_out = torch.where(chosen.view(shape), x * lam_x + x[perm] * (1 - lam_x), x)
        mask_out = torch.where(chosen.view((b,) + (1,) * (mask.dim() - 1)), mask | mask[perm], mask)
        return x_out, mask_out, y[perm], lam

    def __repr__(self) -> str:
        return f"Mixup(p={self.p}, alpha={self.alpha})"
