"""Training-time augmentations of the raw landmarks, batched on the training device.

Raw-landmark entries (tag "sequence") build a BatchAug: called as aug(batch, stream) on a
RawBatch (padded landmarks of a whole batch plus statistics of the landmarks not carried, see
_rawbatch.py) it returns a new RawBatch; the input is never written. Each item is augmented with
probability p, else left bit for bit as it was. Padding stays padding and a missing landmark stays
missing. Coordinates are MediaPipe's normalised image coordinates (x, y roughly in [0, 1], y
pointing down), so the default ranges are fractions of the image. Spatial entries move x and y
only; z, MediaPipe's relative depth, is left alone.

Randomness: every number is drawn per item from its key (seed, fold seed, fold, epoch, cache
index) and the augmentation's stream (its name and occurrence), see _random.py: an item's
augmentation does not depend on the batch size, the other items or the device, and two arms that
share an augmentation give an item the same draws of it (common random numbers).
The normalisation statistics follow exactly, except for `noise` and the random-landmark mode of
`spatial_cutout` (expected values there, see their docstrings).
The batch-level entry (tag "batch") is mixup, see augmentations_temporal.Mixup.
compose() builds a pipeline from (name, params) pairs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ablate.components._random import Draws
from ablate.components._rawbatch import N, PARTS, SXX, SYY, RawBatch
from ablate.components.augmentations_temporal import Mixup, drop_frames, mask_span, random_span, resample
from ablate.data import landmarks as lm
from ablate.errors import UserError
from ablate.registry import Registry

AUGMENTATIONS = Registry("augmentation")


class BatchAug:
    """fn applied to each item with probability p (draw 0 decides). A `lazy` fn takes
    (batch, draws, chosen, **params) and leaves the other items as they are itself (whole-body
    maps, composed into the batch's pending map); any other takes (batch, draws, **params), gets
    the points with the pending map applied, and its result is kept for the chosen items only."""

    def __init__(self, name: str, p: float, fn: Callable[..., RawBatch], lazy: bool = False, **params: Any) -> None:
        self.name, self.p, self.fn, self.lazy, self.params = name, p, fn, lazy, params

    def __call__(self, batch: RawBatch, stream: int, draws: Draws | None = None) -> RawBatch:
        """`draws`: this stream's numbers, when drawn already (Pipeline draws all streams at once)."""
        draws = draws if draws is not None else Draws(batch.keys, stream, batch.stats.device)
        chosen = draws.u(0) < self.p
        if self.lazy:
            return self.fn(batch, draws, chosen, **self.params)
        batch = batch.materialised()
        return batch.merge(chosen, self.fn(batch, draws, **self.params))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}(p={self.p}{', ' + args if args else ''})"


# ---- parameter checks: a bad value is the user's mistake -------------------------------------


def _prob(aug: str, name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"augmentation {aug!r}: {name} must be in [0, 1], got {value!r}")
    return float(value)


def _range(aug: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
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


def _matrix(scale_x: Tensor, scale_y: Tensor, radians: Tensor) -> Tensor:
    """[..., 2, 2] = diag(scale) @ rotation; +angle turns +x towards +y (clockwise on screen,
    since image y points down)."""
    c, s = torch.cos(radians), torch.sin(radians)
    return torch.stack([torch.stack([scale_x * c, -scale_x * s], -1), torch.stack([scale_y * s, scale_y * c], -1)], -2)


def _whole_body(batch: RawBatch, chosen: Tensor, matrix: Tensor, centre: Tensor | None = None,
                offset: Tensor | None = None) -> RawBatch:
    """matrix @ (v - centre) + centre + offset for the chosen items, the identity for the others:
    matrix [B, 2, 2], centre and offset [B, 2]. Written as matrix @ v + t so that the identity
    gives back the very same values."""
    t = torch.zeros_like(matrix[:, 0]) if centre is None else centre - (matrix @ centre[..., None])[..., 0]
    t = t if offset is None else t + offset
    eye = torch.eye(2, dtype=matrix.dtype, device=matrix.device)
    matrix = torch.where(chosen[:, None, None], matrix, eye)
    t = torch.where(chosen[:, None], t, 0.0)
    return batch.affine(matrix[:, None], t[:, None])


def _shift(batch: RawBatch, d: Draws, chosen: Tensor, shift: tuple[float, float]) -> RawBatch:
    offset = torch.stack([d.between(1, shift), d.between(2, shift)], -1)
    eye = torch.eye(2, dtype=torch.float64, device=offset.device).expand(offset.shape[0], 2, 2)
    return _whole_body(batch, chosen, eye, offset=offset)


def _scale(batch: RawBatch, d: Draws, chosen: Tensor, scale: tuple[float, float], per_axis: bool) -> RawBatch:
    sx = d.between(1, scale)
    sy = d.between(2, scale) if per_axis else sx
    return _whole_body(batch, chosen, _matrix(sx, sy, torch.zeros_like(sx)), batch.centres(by_part=False))


def _rotate(batch: RawBatch, d: Draws, chosen: Tensor, degrees: tuple[float, float]) -> RawBatch:
    angle = torch.deg2rad(d.between(1, degrees))
    one = torch.ones_like(angle)
    m = _matrix(one, one, angle)
    return _whole_body(batch, chosen, m, batch.centres(by_part=False))


def _hflip(batch: RawBatch, d: Draws, chosen: Tensor) -> RawBatch:
    return batch.mirrored(chosen)


def _noise(batch: RawBatch, d: Draws, std: tuple[float, float]) -> RawBatch:
    """Gaussian noise on every carried x and y. The normalisation statistics get it in
    expectation: n * sigma^2 added to the sums of squares (sigma <= 0.005 of the image moves the
    clip's standard deviation, about 0.2, by under 0.1%)."""
    sigma = d.between(1, std)
    t = torch.arange(batch.frames, device=sigma.device)[:, None, None]
    coord = torch.arange(2, device=sigma.device)[:, None]
    counter = (t * lm.N_LANDMARKS + batch.layout.rows) * 2 + coord  # [T, 2, P]: the item's own frame and row
    noise = d.field_normal(counter[None]) * sigma.float()[:, None, None, None]
    points = torch.cat([batch.points[:, :, :2] + noise, batch.points[:, :, 2:]], dim=2)
    stats = batch.stats.clone()
    var = (sigma * sigma)[:, None, None]
    stats[..., SXX] += stats[..., N] * var
    stats[..., SYY] += stats[..., N] * var
    return replace(batch, points=points, stats=stats)


def _local_affine(batch: RawBatch, d: Draws, scale: tuple[float, float], degrees: tuple[float, float],
                  shift: tuple[float, float]) -> RawBatch:
    """Each body part gets its own small scale, rotation and shift about its own centre."""
    draw = lambda j, bounds: torch.stack([d.between(1 + 4 * k + j, bounds) for k in range(PARTS)], -1)  # noqa: E731
    s = draw(0, scale)
    m = _matrix(s, s, torch.deg2rad(draw(1, degrees)))
    centre = batch.centres(by_part=True)
    offset = torch.stack([draw(2, shift), draw(3, shift)], -1)
    return batch.affine(m, centre - (m @ centre[..., None])[..., 0] + offset)


def _spatial_cutout(batch: RawBatch, d: Draws, part_prob: float, fraction: tuple[float, float],
                    span: tuple[float, float]) -> RawBatch:
    """Remove one whole body part (probability part_prob) or else each landmark with a probability
    drawn from `fraction`, over a random run of frames (`span` of the clip). In the second mode
    the normalisation statistics keep each part with weight 1 - fraction (its expected share)
    rather than drawing the other landmarks one by one."""
    whole = d.u(1) < part_prob
    part = (d.u(2) * PARTS).long().clamp(max=PARTS - 1)
    frac = d.between(3, fraction)
    spots = d.field_uniform(batch.layout.rows[None]) < frac[:, None].float()
    points = torch.where(whole[:, None], batch.layout.part[None] == part[:, None], spots)
    parts = torch.arange(PARTS, device=part.device)
    keep_rest = torch.where(whole[:, None], (parts[None] != part[:, None]).double(), (1 - frac)[:, None].expand(-1, PARTS))
    start, length = random_span(batch.lengths, d.between(4, span), d.u(5))
    t = torch.arange(batch.frames, device=part.device)[None]
    frames = (t >= start[:, None]) & (t < (start + length)[:, None])
    return batch.blank(frames, points, keep_rest)


# ---- registry entries -------------------------------------------------------------------------


@AUGMENTATIONS.register("shift", tags=("sequence",))
def shift(*, p: float = 0.5, shift: tuple[float, float] = (-0.1, 0.1)) -> BatchAug:
    """Translate the whole clip: dx and dy drawn independently from `shift` (image fractions)."""
    return BatchAug("shift", _prob("shift", "p", p), _shift, lazy=True, shift=_range("shift", "shift", shift))


@AUGMENTATIONS.register("scale", tags=("sequence",))
def scale(*, p: float = 0.5, scale: tuple[float, float] = (0.8, 1.2), per_axis: bool = False) -> BatchAug:
    """Zoom about the clip's mean x, y; per_axis draws separate x and y factors."""
    s = _range("scale", "scale", scale, low=1e-3)
    return BatchAug("scale", _prob("scale", "p", p), _scale, lazy=True, scale=s, per_axis=bool(per_axis))


@AUGMENTATIONS.register("rotate", tags=("sequence",))
def rotate(*, p: float = 0.5, degrees: tuple[float, float] = (-15.0, 15.0)) -> BatchAug:
    """Rotate x, y about the clip's mean point by an angle from `degrees` (positive = clockwise)."""
    return BatchAug("rotate", _prob("rotate", "p", p), _rotate, lazy=True, degrees=_range("rotate", "degrees", degrees))


@AUGMENTATIONS.register("hflip", tags=("sequence",))
def hflip(*, p: float = 0.5) -> BatchAug:
    """Mirror horizontally (x -> 1 - x) and swap left/right hands, eyes, lips and pose sides."""
    return BatchAug("hflip", _prob("hflip", "p", p), _hflip, lazy=True)


@AUGMENTATIONS.register("frame_drop", tags=("sequence",))
def frame_drop(*, p: float = 0.3, rate: tuple[float, float] = (0.0, 0.2)) -> BatchAug:
    """Drop each frame with a probability drawn from `rate`; at least one frame is kept."""
    r = _range("frame_drop", "rate", rate, low=0.0, high=1.0)
    return BatchAug("frame_drop", _prob("frame_drop", "p", p), drop_frames, rate=r)


@AUGMENTATIONS.register("speed", tags=("sequence",))
def speed(*, p: float = 0.5, factor: tuple[float, float] = (0.8, 1.25)) -> BatchAug:
    """Play the clip f times faster (f from `factor`; 2 = half the frames) by taking the nearest
    frame of each new time: frames repeat when slowed down and are skipped when sped up."""
    f = _range("speed", "factor", factor, low=1e-3)
    return BatchAug("speed", _prob("speed", "p", p), resample, factor=f)


@AUGMENTATIONS.register("noise", tags=("sequence",))
def noise(*, p: float = 0.3, std: tuple[float, float] = (0.0, 0.005)) -> BatchAug:
    """Add Gaussian noise to every x and y, sigma drawn from `std` (NaN stays NaN)."""
    return BatchAug("noise", _prob("noise", "p", p), _noise, std=_range("noise", "std", std, low=0.0))


@AUGMENTATIONS.register("local_affine", tags=("sequence",))
def local_affine(
    *,
    p: float = 0.3,
    scale: tuple[float, float] = (0.9, 1.1),
    degrees: tuple[float, float] = (-10.0, 10.0),
    shift: tuple[float, float] = (-0.02, 0.02),
) -> BatchAug:
    """Independent small scale, rotation and shift of each body part (hands, face, pose)."""
    return BatchAug(
        "local_affine",
        _prob("local_affine", "p", p),
        _local_affine,
        scale=_range("local_affine", "scale", scale, low=1e-3),
        degrees=_range("local_affine", "degrees", degrees),
        shift=_range("local_affine", "shift", shift),
    )


@AUGMENTATIONS.register("temporal_mask", tags=("sequence",))
def temporal_mask(*, p: float = 0.3, span: tuple[float, float] = (0.1, 0.3)) -> BatchAug:
    """Remove every landmark in a random run of frames (a fraction `span` of the clip), as if
    nothing was detected; at least one frame is left untouched."""
    s = _range("temporal_mask", "span", span, low=0.0, high=1.0)
    return BatchAug("temporal_mask", _prob("temporal_mask", "p", p), mask_span, span=s)


@AUGMENTATIONS.register("spatial_cutout", tags=("sequence",))
def spatial_cutout(
    *,
    p: float = 0.3,
    part_prob: float = 0.5,
    fraction: tuple[float, float] = (0.05, 0.2),
    span: tuple[float, float] = (0.5, 1.0),
) -> BatchAug:
    """Remove a whole body part or random landmarks over a run of frames (span 1 = whole clip)."""
    return BatchAug(
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
    """Raw-landmark augmentations in order, plus the batch-level one (at most one) for the trainer."""

    sequence: list[BatchAug] = field(default_factory=list)
    batch: list[Mixup] = field(default_factory=list)

    def streams(self) -> list[int]:
        """Each augmentation's random stream: its name's CRC-32 and its occurrence, so that an
        augmentation draws the same numbers whatever comes before it in the list."""
        seen: dict[str, int] = {}
        out = []
        for aug in self.sequence:
            seen[aug.name] = seen.get(aug.name, -1) + 1
            out.append(zlib.crc32(aug.name.encode()) * 64 + seen[aug.name])
        return out

    def __call__(self, batch: RawBatch) -> RawBatch:
        streams = self.streams()
        for aug, stream, draws in zip(self.sequence, streams, Draws.for_streams(batch.keys, streams, batch.stats.device)):
            batch = aug(batch, stream, draws)
        return batch


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
