"""Feature sets: one raw sequence [T, 543, 3] (NaNs kept) -> per-frame features [T', out_dim].

Every feature set is an nn.Module without learned parameters that runs inside the exported model,
so it is written to the export constraints (CONTEXT.md): time indices come from torch.arange and
index_select, never from open-ended or negative slices; there is no Python control flow on tensor
values and no boolean-mask indexing. T' = min(T, max_len) (or N with the frames option); the
output never holds NaN or inf.

Shared steps, in order:
1. centre crop to max_len frames (start = (T - max_len) // 2 when T > max_len), or, with the
   `frames` option, resample to exactly that many frames;
2. (one_hand option) mirror a clip whose left hand dominates;
3. normalise x and y together by one NaN-aware mean and standard deviation over every non-NaN
   x and y value of the cropped clip (all 543 landmarks), or by the body (normalisation "body");
   with keep_z, z gets its own mean and std, because MediaPipe's depth has another origin and
   scale than the image coordinates;
4. select the feature set's points; derived features are computed on the normalised values;
5. NaN (undetected landmarks) -> 0 as the very last step.
Per-frame layout: point-major coordinates (x0, y0[, z0], x1, ...), then each lag difference in
the same layout, then (seed828 only) the hand distances, then per hand the options' joint angles,
bone angles and external distances (_feature_options.py, which defines the options).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ablate.components._graph import PointLayout
from ablate.components._feature_options import SHOULDERS, HandGeometry, Options, body_frame, resample_index
from ablate.components._rawbatch import N, NZ, SX, SXX, SY, SYY, SZ, SZZ, Layout, RawBatch, layout_for
from ablate.data import landmarks as lm
from ablate.errors import UserError
from ablate.registry import Registry

FEATURES = Registry("feature set")  # no context: a feature set is its own params

HAND_POINTS = 21
MIRROR = [int(r) for r in lm.MIRROR]
HANDS = lm.LEFT_HAND_IDX + lm.RIGHT_HAND_IDX
POSE_UPPER_ROWS = [lm.pose(i) for i in lm.POSE_UPPER]
# Face mesh nose points: 1 tip, 2 just below the tip, 98 and 327 the two alae (nostril wings).
NOSE = [1, 2, 98, 327]

# seed828: hands 42, upper pose 8, eyes 32, outer lips 20 = 102 points. The pose nose (0) is left
# out: with it the set is 103 points (832 features), not the 828 the baseline is named for, and the
# face is already placed by the eye and lip points.
SEED828_POSE_ROWS = [lm.pose(i) for i in lm.POSE_UPPER if i != 0]
SEED828_POINTS = HANDS + SEED828_POSE_ROWS + lm.LEFT_EYE + lm.RIGHT_EYE + lm.LIPS_OUTER
# lag118: hands 42, lips 40, eyes 32, nose 4 = 118 points (the face-centred set of 1st place).
LAG118_POINTS = HANDS + lm.LIPS_OUTER + lm.LIPS_INNER + lm.LEFT_EYE + lm.RIGHT_EYE + NOSE
# xy_min: hands 42, upper pose 9 = 51 points.
XY_MIN_POINTS = HANDS + POSE_UPPER_ROWS

_STD_FLOOR = 1e-6  # a std below this (a constant or empty clip) is replaced by 1


def nan_mean_std(v: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std of the non-NaN values of `v` (scalars); 0 and 1 when none is valid."""
    valid = ~torch.isnan(v)
    count = valid.sum().clamp(min=1).to(v.dtype)
    mean = _sum(torch.where(valid, v, 0.0)) / count
    dev = v - mean
    var = _sum(torch.where(valid, dev * dev, 0.0)) / count
    std = torch.sqrt(var)
    return mean, torch.where(std > _STD_FLOOR, std, 1.0)


def _sum(v: Tensor) -> Tensor:
    """Sum of v [T, ...] per frame, then over frames: keeps onnxruntime's float32 sum within 1e-6
    of PyTorch's on long clips, where one flat ReduceSum over ~400k values drifted by 1e-5."""
    return v.flatten(1).sum(dim=1).sum()


def _mean_std(count: Tensor, total: Tensor, squares: Tensor) -> tuple[Tensor, Tensor]:
    """nan_mean_std from sums: float64 [B] mean and std (0 and 1 when nothing is present)."""
    mean = total / count.clamp(min=1)
    std = torch.sqrt((squares / count.clamp(min=1) - mean * mean).clamp(min=0))
    return mean, torch.where(std > _STD_FLOOR, std, 1.0)


def frame_count(x: Tensor) -> Tensor:
    """The number of frames of x [T, ...] as an int64 scalar tensor (traces for any T)."""
    return torch.ones_like(x[:, 0, 0], dtype=torch.int64).sum()


class LandmarkFeatures(nn.Module):
    """Crop, normalise, select points, add forward lag differences and optional hand distances."""

    def __init__(
        self,
        points: list[int],
        max_len: int,
        keep_z: bool,
        lags: tuple[int, ...] = (),
        hand_offsets: tuple[int, ...] = (),
        options: Options | None = None,
    ) -> None:
        super().__init__()
        if max_len < 1:
            raise UserError(f"feature set: max_len must be >= 1, got {max_len}")
        self.max_len = max_len
        self.options = options = options or Options()  # none of the write-up's options
        self.max_frames = options.frames or max_len  # the most frames the model is given
        self.coords = 3 if keep_z else 2
        self.lags = tuple(lags)
        # positions (in `points`) of the first point of each hand whose 21x21 distances are added
        self.hand_offsets = tuple(hand_offsets)
        self.register_buffer("points", torch.tensor(points, dtype=torch.int64), persistent=False)
        self.point_rows = tuple(points)
        self._pairs: dict[str, tuple[Tensor, Tensor]] = {}  # see _pair_matrices
        i, j = torch.triu_indices(HAND_POINTS, HAND_POINTS, offset=1)  # 210 pairs, row-major i < j
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)
        for name, rows in (("mirror", MIRROR), ("left", lm.LEFT_HAND_IDX),
                           ("right", lm.RIGHT_HAND_IDX)):
            self.register_buffer(name, torch.tensor(rows, dtype=torch.int64), persistent=False)
        # the hands among the points (the options' angles and distances), whether or not their
        # pair distances are features
        hands = tuple(i for i in range(len(points)) if list(points[i : i + HAND_POINTS]) in (lm.LEFT_HAND_IDX, lm.RIGHT_HAND_IDX))
        self.geometry = HandGeometry(options, hands, list(points))
        per_frame = len(points) * self.coords
        self.out_dim = per_frame * (1 + len(self.lags)) + len(self.hand_offsets) * i.numel() + self.geometry.out_dim

    def crop(self, x: Tensor) -> Tensor:
        """The centre max_len frames of x (all of x when it is shorter)."""
        start = torch.clamp(frame_count(x) - self.max_len, min=0) // 2
        idx = torch.arange(x.shape[0], device=x.device)[: self.max_len] + start
        return x.index_select(0, idx)

    def out_frames(self, lengths: np.ndarray) -> np.ndarray:
        """The frames this feature set gives clips of `lengths` frames."""
        return np.full_like(lengths, self.options.frames) if self.options.frames else np.minimum(lengths, self.max_len)

    def select_frames(self, x: Tensor) -> Tensor:
        """The centre crop, or (the frames option) the clip resampled to that many frames."""
        if self.options.frames:
            n = self.options.frames
            # 0 .. n - 1 as a length the exporter cannot see through (data-dependent), so the frame
            # axis stays dynamic in the graph: with a static one (n), onnx2tf reorders the model's
            # [1, n, F] tensors as if they were images, and the TFLite model computed garbage
            steps = torch.nonzero(torch.arange(x.shape[0] + n, device=x.device) < n)[:, 0]
            torch._check(steps.shape[0] >= 1)
            return x.index_select(0, resample_index(frame_count(x), n, steps))
        return self.crop(x)

    def dominant_right(self, x: Tensor) -> Tensor:
        """x mirrored (landmarks.mirror) when its left hand has more detected landmarks than its right."""
        left = (~torch.isnan(x.index_select(1, self.left)[:, :, 0])).sum()
        right = (~torch.isnan(x.index_select(1, self.right)[:, :, 0])).sum()
        m = x.index_select(1, self.mirror)
        return torch.where(left > right, torch.cat([1.0 - m[:, :, :1], m[:, :, 1:]], dim=2), x)

    def normalise(self, x: Tensor) -> Tensor:
        """x [T, 543, 3] -> [T, 543, coords]: xy by one shared mean/std (or the body frame), z (if kept)
        by its own mean/std."""
        xy = x[:, :, :2]
        mean, std = nan_mean_std(xy)
        if self.options.normalisation == "body":
            left, right = (x[:, row] for row in SHOULDERS)  # [T, 3] each
            dx, dy, cx, cy, ok = body_frame((left[:, 0], left[:, 1]), (right[:, 0], right[:, 1]))
            dx, dy = torch.where(ok, dx, 1.0 / std), torch.where(ok, dy, 0.0)  # else the mean/std map
            u, v = xy[:, :, 0:1] - torch.where(ok, cx, mean), xy[:, :, 1:2] - torch.where(ok, cy, mean)
            parts = [torch.cat([dx * u + dy * v, dx * v - dy * u], dim=2)]
        else:
            parts = [(xy - mean) / std]
        if self.coords == 3:
            z = x[:, :, 2:3]
            mean_z, std_z = nan_mean_std(z)
            parts.append((z - mean_z) / std_z)
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def lag(self, p: Tensor, lag: int) -> Tensor:
        """p[t + lag] - p[t], zero where t + lag is past the last frame."""
        t = torch.arange(p.shape[0], device=p.device)
        last = frame_count(p) - 1
        later = p.index_select(0, torch.minimum(t + lag, last))
        return torch.where((t + lag <= last)[:, None, None], later - p, 0.0)

    def hand_distances(self, p: Tensor, first: int) -> Tensor:
        """Euclidean distances [T, 210] between the 21 points of the hand starting at p[:, first]."""
        hand = p[:, first : first + HAND_POINTS]
        d = hand.index_select(1, self.pair_i) - hand.index_select(1, self.pair_j)
        return torch.sqrt((d * d).sum(dim=2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.select_frames(x)
        if self.options.one_hand:
            x = self.dominant_right(x)
        x = self.normalise(x)
        p = x.index_select(1, self.points)  # [T', P, coords]
        feats = [p.flatten(1)]
        feats += [self.lag(p, k).flatten(1) for k in self.lags]
        feats += [self.hand_distances(p, first) for first in self.hand_offsets]
        feats += self.geometry(p)
        out = torch.cat(feats, dim=1)
        return torch.where(torch.isnan(out), 0.0, out)

    def batched(self, raw: RawBatch) -> tuple[Tensor, Tensor]:
        """The same features for every item of a padded batch (the training path): x [B, T', F]
        (zero in padding) and the frame mask [B, T'], T' = min(T, max_len) (or N). The normalisation
        comes from the batch's statistics of all 543 landmarks (_rawbatch.py), and is applied
        together with the batch's pending whole-body map, to the set's points only."""
        raw = self._batch_frames(raw)
        if self.options.one_hand:
            raw = raw.mirrored(self._left_dominates(raw))
        m = raw.moments(by_part=False)  # [B, 9] float64 over every landmark of the cropped clips
        mean, std = _mean_std(m[:, N] * 2, m[:, SX] + m[:, SY], m[:, SXX] + m[:, SYY])
        norm = torch.eye(2, dtype=std.dtype, device=std.device) / std[:, None, None]  # v -> norm (v - centre)
        centre = mean[:, None].expand(-1, 2)
        if self.options.normalisation == "body":
            xy = self._mapped(raw, SHOULDERS)  # [B, T, 2 shoulders, 2]
            dx, dy, cx, cy, ok = body_frame((xy[:, :, 0, 0], xy[:, :, 0, 1]), (xy[:, :, 1, 0], xy[:, :, 1, 1]))
            body = torch.stack([torch.stack([dx, dy], -1), torch.stack([-dy, dx], -1)], dim=1)
            norm = torch.where(ok[:, None, None], body, norm)
            centre = torch.where(ok[:, None], torch.stack([cx, cy], -1), centre)
        points, matrix, offset = raw.view(self.point_rows)  # [B, T, 3, P] before the pending map
        # the pending map and the normalisation in one step: norm @ (matrix @ v + offset - centre)
        a, b = (norm @ matrix).float(), (norm @ (offset - centre)[..., None])[..., 0].float()
        out = torch.empty(*points.shape[:2], self.out_dim, device=points.device)
        per_frame = points.shape[3] * self.coords
        p = out[:, :, :per_frame].unflatten(2, (points.shape[3], self.coords))  # point-major, as in forward
        x, y = points[:, :, 0], points[:, :, 1]
        for i in range(2):
            p[..., i] = a[:, i, 0, None, None] * x + a[:, i, 1, None, None] * y + b[:, i, None, None]
        if self.coords == 3:
            mean_z, std_z = _mean_std(m[:, NZ], m[:, SZ], m[:, SZZ])
            p[..., 2] = (points[:, :, 2] - mean_z.float()[:, None, None]) / std_z.float()[:, None, None]
        self._fill_batch(out, per_frame)
        return out, raw.mask()

    def _batch_frames(self, raw: RawBatch) -> RawBatch:
        """select_frames for a batch: resampled, or each item centre-cropped to max_len."""
        if self.options.frames:
            n = self.options.frames
            return raw.take(resample_index(raw.lengths, n), torch.full_like(raw.lengths, n))
        if raw.frames <= self.max_len:  # no item can be longer than max_len
            return raw
        start = (raw.lengths - self.max_len).clamp(min=0) // 2
        index = torch.arange(self.max_len, device=start.device)[None] + start[:, None]
        return raw.take(index, raw.lengths.clamp(max=self.max_len))

    def _left_dominates(self, raw: RawBatch) -> Tensor:
        """[B] dominant_right's test for each item of a batch."""
        left, right = (raw.view(tuple(rows))[0][:, :, 0] for rows in (lm.LEFT_HAND_IDX, lm.RIGHT_HAND_IDX))
        return (~torch.isnan(left)).sum(dim=(1, 2)) > (~torch.isnan(right)).sum(dim=(1, 2))

    @staticmethod
    def _mapped(raw: RawBatch, rows: tuple[int, ...]) -> Tensor:
        """x, y of carried `rows` after the pending map: [B, T, len(rows), 2] float64."""
        points, matrix, offset = raw.view(rows)
        xy = points[:, :, :2].double()  # [B, T, 2, P]
        mapped = torch.einsum("bij,btjp->btip", matrix, xy) + offset[:, None, :, None]
        return mapped.transpose(2, 3)

    def _fill_batch(self, out: Tensor, per_frame: int) -> None:
        """The rest of `forward` for a padded batch whose normalised points fill out[..., :per_frame]: the lags
        and hand distances are written into the rest of `out`, then NaN -> 0. Written for speed
        (lags on whole frames, hand distances as a matrix product per coordinate); the same
        numbers, held equal by tests. Padding frames hold NaN points, so they come out zero, and a
        lag that reaches past an item's last frame meets padding (NaN) or the end (set NaN)."""
        frames = out.shape[1]
        p = out[:, :, :per_frame]
        col = per_frame
        if self.geometry.out_dim:  # the options' hand geometry, from the normalised points alone
            extra = torch.cat(self.geometry(p.unflatten(2, (-1, self.coords))), dim=2)
            out[:, :, out.shape[2] - extra.shape[2]:] = extra
        for k in self.lags:
            lag = out[:, :, col : col + per_frame]
            keep = max(frames - k, 0)  # frames with a frame k later in the tensor
            torch.sub(p[:, k:], p[:, :keep], out=lag[:, :keep])
            lag[:, keep:] = torch.nan
            col += per_frame
        if self.hand_offsets:
            pts = p.unflatten(2, (-1, self.coords))
            hands = [torch.stack([pts[:, :, f : f + HAND_POINTS, c] for f in self.hand_offsets], dim=2)
                     for c in range(self.coords)]  # [B, T, H, 21] per coordinate
            pairs, touches = self._pair_matrices(out.device)
            missing = torch.isnan(hands[0])  # x and y are missing together (the store's rule); z may not be
            for h in hands[2:]:
                missing |= torch.isnan(h)
            # missing points as 0: a wholly missing hand then gives distances of exactly 0, as the
            # per-sequence module's NaN -> 0 does, and no NaN reaches the product or the square
            # root (NaN arithmetic is several times slower on CPUs)
            hands = [torch.nan_to_num(h, nan=0.0) for h in hands]
            squares = (hands[0] @ pairs).square_()
            for h in hands[1:]:
                squares += (h @ pairs).square_()
            partial = out.device.type != "cpu" or bool((missing.any(-1) & ~missing.all(-1)).any())
            if partial:  # a partly missing hand: pairs touching a missing point have no distance
                squares.masked_fill_((missing.float() @ touches) > 0, 0.0)
            out[:, :, col : col + squares[0, 0].numel()] = _sqrt_(squares).flatten(2)
        torch.nan_to_num_(out, nan=0.0, posinf=float("inf"), neginf=float("-inf"))

    def _pair_matrices(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """[21, 210] matrices: point i minus point j for each pair (i < j) of a hand, and which
        points each pair touches. Made once per device."""
        key = str(device)
        if key not in self._pairs:
            cols = torch.arange(self.pair_i.numel())
            diff = torch.zeros(HAND_POINTS, cols.numel())
            diff[self.pair_i.cpu(), cols] = 1.0
            diff[self.pair_j.cpu(), cols] = -1.0
            self._pairs[key] = (diff.to(device), diff.abs().to(device))
        return self._pairs[key]

    def point_layout(self) -> PointLayout:
        """Which columns of a frame's features are which point's (its coordinates, then its lag
        differences), for models that need to know (the graph model); the rest are `extra`."""
        p, c, blocks = len(self.point_rows), self.coords, 1 + len(self.lags)
        columns = tuple(b * p * c + i * c + k for i in range(p) for b in range(blocks) for k in range(c))
        return PointLayout(self.point_rows, c * blocks, columns, tuple(range(p * c * blocks, self.out_dim)))

    def layout(self) -> Layout:
        """The landmarks a batch must carry for this feature set (its points, the rows its options
        read, and their mirrors)."""
        extra = [*SHOULDERS] * (self.options.normalisation == "body")
        extra += [*lm.LEFT_HAND_IDX, *lm.RIGHT_HAND_IDX] * self.options.one_hand
        return layout_for([*self.point_rows, *extra])

    def extra_repr(self) -> str:
        return (
            f"points={self.points.numel()}, coords={self.coords}, max_len={self.max_len}, "
            f"lags={self.lags}, hand_distances={len(self.hand_offsets)}, out_dim={self.out_dim}, {self.options}"
        )


@FEATURES.register("seed828")
def seed828(
    *,
    max_len: int = 384,
    keep_z: bool = False,
    normalisation: str = "global",
    frames: int = 0,
    one_hand: bool = False,
    joint_angles: bool = False,
    bone_angles: bool = False,
    external_distances: bool = False,
    motion: bool = True,
    hand_distances: bool = True,
) -> LandmarkFeatures:
    """Baseline (top-50 solution): 102 points xy, their motion, 2x210 hand distances = 828/frame.

    Points in order: left hand 21, right hand 21, pose 8 (shoulders 11/12, elbows 13/14, wrists
    15/16, hips 23/24), left eye 16, right eye 16, outer lips 20. Motion is frame t+1 minus
    frame t (zero for the last frame); distances are the i < j pairs of each hand, left first.
    With keep_z: 306 + 306 + 420 = 1032 features, distances in 3D.
    The write-up's preprocessing experiments are options (_feature_options.py): normalisation
    global | body, frames (resample to N frames instead of the crop), one_hand (the left hand's 21
    points and distances left out; 534/frame), joint_angles (+30 per hand), bone_angles (+40 per
    hand), external_distances (+147 per hand); motion and hand_distances (the baseline's, on by
    default) can be left out.
    """
    options = Options(normalisation, frames, one_hand, joint_angles, bone_angles, external_distances)
    points = SEED828_POINTS[HAND_POINTS:] if one_hand else SEED828_POINTS
    hands = ((0,) if one_hand else (0, HAND_POINTS)) if hand_distances else ()
    return LandmarkFeatures(points, max_len, keep_z, lags=(1,) if motion else (), hand_offsets=hands, options=options)


@FEATURES.register("lag118")
def lag118(*, max_len: int = 384, keep_z: bool = False) -> LandmarkFeatures:
    """1st-place style: 118 points xy plus their lag-1 and lag-2 differences = 708/frame.

    Points in order: left hand 21, right hand 21, outer lips 20, inner lips 20, left eye 16,
    right eye 16, nose 4 (face mesh 1, 2, 98, 327). Lag k is frame t+k minus frame t, zero where
    t+k is past the end. With keep_z: 1062 features.
    """
    return LandmarkFeatures(LAG118_POINTS, max_len, keep_z, lags=(1, 2))


@FEATURES.register("xy_min")
def xy_min(*, max_len: int = 384, keep_z: bool = False) -> LandmarkFeatures:
    """Minimal: both hands and 9 upper-body pose points, normalised xy only = 102/frame."""
    return LandmarkFeatures(XY_MIN_POINTS, max_len, keep_z)


def _sqrt_(t: Tensor) -> Tensor:
    """Square root in place. On the CPU by numpy: torch 2.13's CPU float32 sqrt was about 10x slower
    on these tensors (2.4 vs 0.2 ms for 32 x 35 x 420 values, 30% zeros: missing hands) and differs
    from the correctly rounded root in about 17% of values; numpy's is exact (measured 2026-11-26)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous() and not t.requires_grad:
        np.sqrt(t.numpy(), out=t.numpy())
        return t
    return t.sqrt_()
