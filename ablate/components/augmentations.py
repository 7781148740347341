"""Training-time augmentations of the raw landmarks, applied before the feature set.

Sequence-level entries (tag "sequence") build a SequenceAug: called as aug(x, rng) with x float32
[T, 543, 3] (NaN = undetected) and a numpy Generator, it returns a new float32 [T', 543, 3],
T' >= 1; x is never written. With probability 1 - p it returns an unchanged copy. A landmark that
is NaN stays NaN. Coordinates are MediaPipe's normalised image coordinates (x, y roughly in
[0, 1], y pointing down), so the default ranges are fractions of the image. Spatial entries move
x and y only; z, MediaPipe's relative depth, is left alone.
The batch-level entry (tag "batch") is mixup, see augmentations_temporal.Mixup.
compose() builds a pipeline from (name, params) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablate.components.augmentations_temporal import Mixup, drop_frames, mask_span, random_span, resample
from ablate.data import landmarks as lm
from ablate.errors import UserError
from ablate.registry import Registry

AUGMENTATIONS = Registry("augmentation")

# Body parts that local_affine moves independently and spatial_cutout may remove: row ranges.
BODY_PARTS: dict[str, range] = {name: range(first, first + n) for name, first, n in lm.PARTS}


class SequenceAug:
    """fn(x, rng, **params) applied with probability p; fn must return a new array."""

    def __init__(self, name: str, p: float, fn: Callable[..., np.ndarray], **params: Any) -> None:
        self.name, self.p, self.fn, self.params = name, p, fn, params

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return x.copy()
        return np.asarray(self.fn(x, rng, **self.params), dtype=np.float32)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}(p={self.p}{', ' + args if args else ''})"


# ---- parameter checks: a bad value is the user's mistake -------------------------------------


def _prob(aug: str, name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"augmentation {aug!r}: {name} must be in [0, 1], got {value!r}")
    return float(value)


def _range(aug: str, name: str, value: Any, low: float = -np.inf, high: float = np.inf) -> tuple[float, float]:
    """Two numbers (a list from a config file is fine) with low <= a <= b <= high."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"augmentation {aug!r}: {name} must be two numbers [low, high], got {value!r}") from None
    if not low <= a <= b <= high:
        raise UserError(
            f"augmentation {aug!r}: {name} must be [low, high] with {low} <= low <= high <= {high}, got {value!r}"
        )
    return a, b


# ---- spatial functions ------------------------------------------------------------------------


def _centre(xy: np.ndarray) -> np.ndarray:
    """Mean x, y [2] over every non-NaN landmark of xy [..., 2]; the image centre when none is."""
    flat = xy.reshape(-1, 2)
    valid = ~np.isnan(flat[:, 0])  # MediaPipe drops x and y together
    n = int(valid.sum())
    if not n:
        return np.array([0.5, 0.5], dtype=np.float32)
    return (np.where(valid[:, None], flat, 0.0).sum(axis=0) / n).astype(np.float32)


def _rotation(degrees: float) -> np.ndarray:
    """2x2 matrix turning +x towards +y (clockwise on screen, since image y points down)."""
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _affine(xy: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """matrix @ (xy - centre) + centre + offset, about the centre of xy."""
    c = _centre(xy)
    m = np.asarray(matrix, dtype=np.float32)
    t = (c + np.asarray(offset, dtype=np.float32)).astype(np.float32)
    dx, dy = xy[..., 0] - c[0], xy[..., 1] - c[1]
    # written out rather than a matmul: float32 throughout, and ~5x faster on [T, 543] arrays
    return np.stack([m[0, 0] * dx + m[0, 1] * dy + t[0], m[1, 0] * dx + m[1, 1] * dy + t[1]], axis=-1)


def _shift(x: np.ndarray, rng: np.random.Generator, shift: tuple[float, float]) -> np.ndarray:
    out = x.copy()
    out[..., :2] += rng.uniform(*shift, size=2).astype(np.float32)
    return out


def _scale(x: np.ndarray, rng: np.random.Generator, scale: tuple[float, float], per_axis: bool) -> np.ndarray:
    s = rng.uniform(*scale, size=2 if per_axis else 1)
    out = x.copy()
    out[..., :2] = _affine(x[..., :2], np.diag(np.broadcast_to(s, 2)), np.zeros(2))
    return out


def _rotate(x: np.ndarray, rng: np.random.Generator, degrees: tuple[float, float]) -> np.ndarray:
    out = x.copy()
    out[..., :2] = _affine(x[..., :2], _rotation(rng.uniform(*degrees)), np.zeros(2))
    return out


def _hflip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return lm.mirror(x)


def _noise(x: np.ndarray, rng: np.random.Generator, std: tuple[float, float]) -> np.ndarray:
    out = x.copy()
    out[..., :2] += rng.normal(0.0, rng.uniform(*std), size=x[..., :2].shape).astype(np.float32)
    return out


def _local_affine(
    x: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[float, float],
    degrees: tuple[float, float],
    shift: tuple[float, float],
) -> np.ndarray:
    """Each body part gets its own small scale, rotation and shift about its own centre."""
    out = x.copy()
    for rows in BODY_PARTS.values():
        matrix = rng.uniform(*scale) * _rotation(rng.uniform(*degrees))
        offset = rng.uniform(*shift, size=2)
        out[:, rows, :2] = _affine(x[:, rows, :2], matrix, offset)
    return out


def _spatial_cutout(
    x: np.ndarray,
    rng: np.random.Generator,
    part_prob: float,
    fraction: tuple[float, float],
    span: tuple[float, float],
) -> np.ndarray:
    """NaN out one whole body part (probability part_prob) or else a random subset of landmarks
    (each with probability drawn from `fraction`), over a random run of frames (`span` of T)."""
    if rng.random() < part_prob:
        rows = np.array(list(BODY_PARTS.values())[rng.integers(len(BODY_PARTS))])
    else:
        rows = np.flatnonzero(rng.random(lm.N_LANDMARKS) < rng.uniform(*fraction))
    start, length = random_span(x.shape[0], span, rng)
    out = x.copy()
    out[start : start + length, rows] = np.nan
    return out


# ---- registry entries -------------------------------------------------------------------------


@AUGMENTATIONS.register("shift", tags=("sequence",))
def shift(*, p: float = 0.5, shift: tuple[float, float] = (-0.1, 0.1)) -> SequenceAug:
    """Translate the whole clip: dx and dy drawn independently from `shift` (image fractions)."""
    return SequenceAug("shift", _prob("shift", "p", p), _shift, shift=_range("shift", "shift", shift))


@AUGMENTATIONS.register("scale", tags=("sequence",))
def scale(*, p: float = 0.5, scale: tuple[float, float] = (0.8, 1.2), per_axis: bool = False) -> SequenceAug:
    """Zoom about the clip's mean x, y; per_axis draws separate x and y factors."""
    s = _range("scale", "scale", scale, low=1e-3)
    return SequenceAug("scale", _prob("scale", "p", p), _scale, scale=s, per_axis=bool(per_axis))


@AUGMENTATIONS.register("rotate", tags=("sequence",))
def rotate(*, p: float = 0.5, degrees: tuple[float, float] = (-15.0, 15.0)) -> SequenceAug:
    """Rotate x, y about the clip's mean point by an angle from `degrees` (positive = clockwise)."""
    return SequenceAug("rotate", _prob("rotate", "p", p), _rotate, degrees=_range("rotate", "degrees", degrees))


@AUGMENTATIONS.register("hflip", tags=("sequence",))
def hflip(*, p: float = 0.5) -> SequenceAug:
    """Mirror horizontally (x -> 1 - x) and swap left/right hands, eyes, lips and pose sides."""
    return SequenceAug("hflip", _prob("hflip", "p", p), _hflip)


@AUGMENTATIONS.register("frame_drop", tags=("sequence",))
def frame_drop(*, p: float = 0.3, rate: tuple[float, float] = (0.0, 0.2)) -> SequenceAug:
    """Drop each frame with a probability drawn from `rate`; at least one frame is kept."""
    r = _range("frame_drop", "rate", rate, low=0.0, high=1.0)
    return SequenceAug("frame_drop", _prob("frame_drop", "p", p), drop_frames, rate=r)


@AUGMENTATIONS.register("speed", tags=("sequence",))
def speed(*, p: float = 0.5, factor: tuple[float, float] = (0.8, 1.25)) -> SequenceAug:
    """Resample in time by a speed factor (2 = twice as fast, half the frames), NaN-aware."""
    f = _range("speed", "factor", factor, low=1e-3)
    return SequenceAug("speed", _prob("speed", "p", p), resample, factor=f)


@AUGMENTATIONS.register("noise", tags=("sequence",))
def noise(*, p: float = 0.3, std: tuple[float, float] = (0.0, 0.005)) -> SequenceAug:
    """Add Gaussian noise to every x and y, sigma drawn from `std` (NaN stays NaN)."""
    return SequenceAug("noise", _prob("noise", "p", p), _noise, std=_range("noise", "std", std, low=0.0))


@AUGMENTATIONS.register("local_affine", tags=("sequence",))
def local_affine(
    *,
    p: float = 0.3,
    scale: tuple[float, float] = (0.9, 1.1),
    degrees: tuple[float, float] = (-10.0, 10.0),
    shift: tuple[float, float] = (-0.02, 0.02),
) -> SequenceAug:
    """Independent small scale, rotation and shift of each body part (hands, face, pose)."""
    return SequenceAug(
        "local_affine",
        _prob("local_affine", "p", p),
        _local_affine,
        scale=_range("local_affine", "scale", scale, low=1e-3),
        degrees=_range("local_affine", "degrees", degrees),
        shift=_range("local_affine", "shift", shift),
    )


@AUGMENTATIONS.register("temporal_mask", tags=("sequence",))
def temporal_mask(*, p: float = 0.3, span: tuple[float, float] = (0.1, 0.3)) -> SequenceAug:
    """Set a random run of frames (a fraction `span` of the clip) to NaN, as if undetected."""
    s = _range("temporal_mask", "span", span, low=0.0, high=1.0)
    return SequenceAug("temporal_mask", _prob("temporal_mask", "p", p), mask_span, span=s)


@AUGMENTATIONS.register("spatial_cutout", tags=("sequence",))
def spatial_cutout(
    *,
    p: float = 0.3,
    part_prob: float = 0.5,
    fraction: tuple[float, float] = (0.05, 0.2),
    span: tuple[float, float] = (0.5, 1.0),
) -> SequenceAug:
    """Set a whole body part or random landmarks to NaN over a run of frames (span 1 = whole clip)."""
    return SequenceAug(
        "spatial_cutout",
        _prob("spatial_cutout", "p", p),
        _spatial_cutout,
        part_prob=_prob("spatial_cutout", "part_prob", part_prob),
        fraction=_range("spatial_cutout", "fraction", fraction, low=0.0, high=1.0),
        span=_range("spatial_cutout", "span", span, low=0.0, high=1.0),
    )


@AUGMENTATIONS.register("mixup", tags=("batch",))
def mixup(*, p: float = 0.5, alpha: float = 0.2) -> Mixup:
    """Batch-level: mix a sample's features and labels with a random partner, lam ~ Beta(alpha, alpha)."""
    if not float(alpha) > 0:
        raise UserError(f"augmentation 'mixup': alpha must be > 0, got {alpha!r}")
    return Mixup(_prob("mixup", "p", p), float(alpha))


# ---- pipeline ---------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """Sequence-level augmentations in order, plus the batch-level one (at most one) for the trainer."""

    sequence: list[SequenceAug] = field(default_factory=list)
    batch: list[Mixup] = field(default_factory=list)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = x.copy()
        for aug in self.sequence:
            out = aug(out, rng)
        return out


def compose(entries: Sequence[tuple[str, Mapping[str, Any] | None]], where: str = "") -> Pipeline:
    """Build the pipeline from (name, params) pairs in order; unknown names or params -> UserError."""
    pipeline = Pipeline()
    for name, params in entries:
        aug = AUGMENTATIONS.build(name, params, where=where)
        tags = AUGMENTATIONS.get(name).tags
        (pipeline.sequence if "sequence" in tags else pipeline.batch).append(aug)
    if len(pipeline.batch) > 1:
        at = f"{where}: " if where else ""
        raise UserError(f"{at}at most one batch-level augmentation (the loss mixes two labels), got {len(pipeline.batch)}")
    return pipeline
