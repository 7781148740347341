"""The sequences an exported model is checked on: the edge cases the issue names, and real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ablate.data import kaggle
from ablate.data import landmarks as lm
from ablate.data.cache import Cache
from ablate.errors import UserError

Case = tuple[str, np.ndarray]
CROP = 384  # the baseline feature sets' centre crop, in frames


def tile(frames: np.ndarray, length: int) -> np.ndarray:
    """The sequence repeated in time and cut to `length` frames: real motion at any length."""
    reps = -(-length // len(frames))
    return np.concatenate([frames] * reps)[:length].copy()


def edge_cases(frames: np.ndarray, crop: int = CROP) -> list[Case]:
    """Lengths 1, 2, the median, exactly the crop and over it, and missing detections."""
    hands = np.r_[lm.LEFT_HAND_IDX, lm.RIGHT_HAND_IDX]
    no_hands = frames.copy()
    no_hands[:, hands] = np.nan
    every = np.full((12, lm.N_LANDMARKS, 3), np.nan, dtype=np.float32)
    return [
        ("T=1", frames[:1].copy()),
        ("T=2", frames[:2].copy()),
        (f"T={len(frames)} (median length)", frames.copy()),
        (f"T={crop} (the crop)", tile(frames, crop)),
        (f"T={crop + 216} (cropped to {crop})", tile(frames, crop + 216)),
        ("both hands NaN in every frame", no_hands),
        ("every landmark NaN (12 frames)", every),
    ]


def data_cases(data: Cache, n: int, seed: int = 0) -> list[Case]:
    """n sequences of the data, spread over its length distribution. A data set with fewer than n
    sequences is topped up with random stretches of its sequences (still real motion, other lengths)."""
    order = np.argsort(data.lengths, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, n).round().astype(int)] if n < len(order) else order
    rng = np.random.default_rng(seed)
    out = [(f"sequence {int(data.sequence_ids[i])} (T={int(data.lengths[i])})", np.array(data.sequence(int(i))))
           for i in rng.permutation(pick)]
    while len(out) < n:
        i = int(rng.integers(len(data)))
        length = int(data.lengths[i])
        a = int(rng.integers(length))
        b = int(rng.integers(a + 1, length + 1))
        out.append((f"sequence {int(data.sequence_ids[i])} frames {a}..{b - 1}", np.array(data.sequence(i)[a:b])))
    return out


def median_sequence(data: Cache) -> np.ndarray:
    i = int(np.argsort(data.lengths, kind="stable")[len(data) // 2])
    return np.array(data.sequence(i))


def file_cases(paths: Sequence[Path]) -> list[Case]:
    """Competition files read as the harness reads them (x, y, z; NaNs kept). A folder stands for
    every .parquet file under it; a file that cannot be read is a UserError naming it."""
    files: list[Path] = []
    for p in map(Path, paths):
        found = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
        if not found:
            raise UserError(f"{p}: no .parquet landmark files under it")
        files += found
    out = []
    for f in files:
        try:
            out.append((f"{f.parent.name}/{f.name}", kaggle.read_landmarks(f)))
        except kaggle.BadFile as e:
            raise UserError(f"{f}: {e}") from None
    return out


def realistic(data: Cache, n: int = 100, seed: int = 1) -> list[np.ndarray]:
    """A random sample of the data's sequences: the length mix that latency is measured on."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data), size=min(n, len(data)), replace=False)
    return [np.array(data.sequence(int(i))) for i in pick]
