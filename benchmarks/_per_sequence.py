"""The old input path, kept only as the benchmarks' point of comparison: one sequence at a time,
numpy augmentations on all 543 raw landmarks, the per-sequence feature module, then padding.

This is how `train_fold` prepared batches before the batched path (ablate 0.x, up to commit
c9792fd): the baseline augmentations (shift, scale, rotate, hflip, each with p = 0.5 and the
registry's default ranges) and the collate step, reduced to what input_pipeline.py runs.
"""

from __future__ import annotations

import numpy as np
import torch

from ablate.data import landmarks as lm


def _centre(xy: np.ndarray) -> np.ndarray:
    flat = xy.reshape(-1, 2)
    valid = ~np.isnan(flat[:, 0])
    n = int(valid.sum())
    if not n:
        return np.array([0.5, 0.5], dtype=np.float32)
    return (np.where(valid[:, None], flat, 0.0).sum(axis=0) / n).astype(np.float32)


def _affine(xy: np.ndarray, m: np.ndarray) -> np.ndarray:
    c = _centre(xy)
    m = m.astype(np.float32)
    dx, dy = xy[..., 0] - c[0], xy[..., 1] - c[1]
    return np.stack([m[0, 0] * dx + m[0, 1] * dy + c[0], m[1, 0] * dx + m[1, 1] * dy + c[1]], axis=-1)


def _shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    out[..., :2] += rng.uniform(-0.1, 0.1, size=2).astype(np.float32)
    return out


def _scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    out[..., :2] = _affine(x[..., :2], np.diag(np.broadcast_to(rng.uniform(0.8, 1.2), 2)))
    return out


def _rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-15.0, 15.0))
    out = x.copy()
    out[..., :2] = _affine(x[..., :2], np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]))
    return out


BASELINE = (_shift, _scale, _rotate, lambda x, rng: lm.mirror(x))


def item(frames: np.ndarray, features: torch.nn.Module, rng: np.random.Generator) -> torch.Tensor:
    """One training item as the old SequenceDataset made it: augment with p = 0.5 each, featurise."""
    raw = np.array(frames, dtype=np.float32)
    for aug in BASELINE:
        raw = aug(raw, rng) if rng.random() < 0.5 else raw.copy()
    with torch.no_grad():
        return features(torch.from_numpy(np.ascontiguousarray(raw)))


def pad_collate(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(f.shape[0] for f in items)
    x = torch.zeros(len(items), longest, items[0].shape[1])
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, f in enumerate(items):
        x[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
    return x, mask
