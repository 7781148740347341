"""The optional parts of a feature set: the preprocessing experiments of the baseline's write-up.

Each one is written once, for a single clip ([T, ...], the exported graph) and a padded batch
([B, T, ...], training) alike: the functions work on the trailing dimensions and reduce over the
frame dimension they are told. They follow the export constraints of features.py (no control flow
on tensor values, no boolean-mask indexing, no trigonometry: angles are given as cosine and sine).

- normalisation "body" (the write-up's "advanced normalisation"): instead of one mean and std of
  x and y over all landmarks, the origin is the mean shoulder midpoint, the axes are rotated so
  that the mean shoulder line (left minus right shoulder) points along +x, and the unit is the
  mean shoulder width; means over the frames in which both shoulders are present. A clip without
  any such frame (or with zero width) falls back to the mean/std normalisation. z, when kept, keeps
  its own mean and std (MediaPipe's depth has another origin and scale).
- frames N: every clip resampled to exactly N frames, frame i taken from source frame
  floor((2i + 1) T / 2N) (the nearest frame to the centre of the i-th of N equal slices; integer
  arithmetic, so the per-clip and batched forms pick the same frames). Replaces the centre crop.
- one_hand: the hand with more detected landmarks in the (cropped) clip is the dominant one; a
  clip whose left hand dominates is mirrored (landmarks.mirror: x -> 1 - x, left and right
  swapped), so the dominant hand is always the right one, and the left hand's points are left out.
- joint_angles: at each of the 15 finger joints of a hand (3 per finger), the signed angle in the
  image plane between the bone into the joint and the bone out of it: 15 cosines, then 15 sines.
- bone_angles: the direction of each of the 20 bones of a hand (wrist or joint -> the next joint
  outwards) against the x axis: 20 cosines, then 20 sines.
- external_distances: the distance of each of a hand's 21 points to each of EXTERNAL_ROWS (face
  and body points), hand point-major.
A bone of zero length gives cosine and sine 0; a missing point gives 0 (NaN -> 0 at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ablate.data import landmarks as lm
from ablate.errors import UserError, unknown

HAND_POINTS = 21
# MediaPipe hand points: 0 the wrist, then 4 per finger from the palm outwards (thumb 1-4 ... pinky 17-20)
FINGERS = [tuple(range(1 + 4 * f, 5 + 4 * f)) for f in range(5)]
BONES = [(a, b) for f in FINGERS for a, b in zip((0, *f[:-1]), f)]  # 20 (from, to)
JOINTS = [(a, b, c) for f in FINGERS for a, b, c in zip((0, *f[:-2]), f[:-1], f[1:])]  # 15 (before, at, after)
SHOULDERS = (lm.pose(11), lm.pose(12))  # MediaPipe pose: 11 the left shoulder, 12 the right
# Face and body points a hand's distance is measured to: both shoulders, the mouth corners (61,
# 291), the upper lip's top (0) and the outer eye corners (33 right, 263 left). A set closed
# under mirroring, so a mirrored clip measures the same points.
EXTERNAL_ROWS = (*SHOULDERS, 61, 291, 0, 33, 263)
NORMALISATIONS = ("global", "body")
_EPS = 1e-12  # a squared length below this counts as zero


@dataclass(frozen=True)
class Options:
    normalisation: str = "global"
    frames: int = 0  # 0: the centre crop to max_len
    one_hand: bool = False
    joint_angles: bool = False
    bone_angles: bool = False
    external_distances: bool = False

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise unknown("normalisation", self.normalisation, NORMALISATIONS)
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 0:
            raise UserError(f"feature set: frames must be an integer >= 0 (0: crop instead), got {self.frames!r}")

    def per_hand(self) -> int:
        """Features added per hand by the angle and distance options."""
        joints, bones = 2 * len(JOINTS), 2 * len(BONES)
        return joints * self.joint_angles + bones * self.bone_angles + \
            HAND_POINTS * len(EXTERNAL_ROWS) * self.external_distances


def resample_index(lengths: Tensor, n: int, steps: Tensor | None = None) -> Tensor:
    """[..., n] source frame of each of n frames for clips of `lengths` frames (int64, >= 1);
    `steps` is 0 .. n - 1 when the caller makes it (see LandmarkFeatures.select_frames)."""
    i = torch.arange(n, device=lengths.device, dtype=torch.int64) if steps is None else steps
    return ((2 * i + 1) * lengths[..., None]) // (2 * n)


def body_frame(left: tuple[Tensor, Tensor], right: tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
    """The left and right shoulders' x and y ([..., T] each, NaN when missing) -> the map
    v -> A (v - c) with A = [[dx, dy], [-dy, dx]] (a rotation to a level shoulder line, divided by
    the shoulder width), as dx, dy, cx, cy [...], and ok [...] (False: no frame with both
    shoulders, or zero width; the map is unusable then). Written on vectors, not [T, 2, 2] blocks:
    onnx2tf reorders the axes of 3D and 4D tensors as if they were images and got this wrong."""
    mx, my = (left[0] + right[0]) * 0.5, (left[1] + right[1]) * 0.5
    wx, wy = left[0] - right[0], left[1] - right[1]
    valid = ~(torch.isnan(mx) | torch.isnan(my))  # [..., T]
    count = valid.sum(-1).to(mx.dtype).clamp(min=1)
    cx, cy, wx, wy = (torch.where(valid, v, 0.0).sum(-1) / count for v in (mx, my, wx, wy))
    w2 = wx * wx + wy * wy
    ok = valid.any(-1) & (w2 > _EPS)
    s = torch.where(ok, w2, 1.0)
    return wx / s, wy / s, cx, cy, ok


def _unit(d: Tensor) -> Tensor:
    """d [..., 2] scaled to length 1; 0 where it has (almost) no length."""
    squared = (d * d).sum(-1, keepdim=True)
    return torch.where(squared > _EPS, d / torch.sqrt(squared.clamp(min=_EPS)), 0.0)


def _cos_sin(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine and sine of the signed angle from u to v ([..., 2] each); 0 and 0 when either has no length."""
    u, v = _unit(u), _unit(v)
    return (u * v).sum(-1), u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


class HandGeometry(torch.nn.Module):
    """The angle and distance options for the hands of a point set: [..., P, C] -> [..., H * per_hand]."""

    def __init__(self, options: Options, hand_offsets: tuple[int, ...], points: list[int]) -> None:
        super().__init__()
        self.options, self.hand_offsets = options, hand_offsets
        missing = [r for r in EXTERNAL_ROWS if r not in points]
        if options.external_distances and missing:
            raise UserError(f"feature set: external_distances needs landmark rows {missing} among its points")
        refs = [points.index(r) for r in EXTERNAL_ROWS] if options.external_distances else []
        for name, value in (("joints", JOINTS), ("bones", BONES)):
            for k in range(len(value[0])):
                self.register_buffer(f"{name}{k}", torch.tensor([j[k] for j in value]), persistent=False)
        self.refs = tuple(refs)  # positions in the point set (Python ints: no device sync per batch)
        self.out_dim = len(hand_offsets) * options.per_hand()

    def forward(self, p: Tensor) -> list[Tensor]:
        dim = p.dim() - 2  # the point dimension
        feats: list[Tensor] = []
        for first in self.hand_offsets:
            hand = p.narrow(dim, first, HAND_POINTS)
            xy = hand[..., :2]
            if self.options.joint_angles:
                a, b, c = (xy.index_select(dim, getattr(self, f"joints{k}")) for k in range(3))
                feats += _cos_sin(b - a, c - b)
            if self.options.bone_angles:
                a, b = (xy.index_select(dim, getattr(self, f"bones{k}")) for k in range(2))
                d = _unit(b - a)
                feats += [d[..., 0], d[..., 1]]
            if self.options.external_distances:
                # one reference point at a time: a [T, 21, R, C] broadcast is 4D, which onnx2tf
                # transposes as if it were an image (and then fails to broadcast)
                dist = [(hand - p.narrow(dim, r, 1)).square().sum(-1).sqrt() for r in self.refs]
                feats.append(torch.stack(dist, dim=-1).flatten(-2))  # [..., 21 * R], hand point-major
        return feats
