"""A padded batch of raw landmarks on the training device, as batched augmentations and features
see it: only the landmarks a feature set reads (and their mirror images), plus per-frame sufficient
statistics of all 543 landmarks.

Why statistics: the feature sets normalise x and y by one mean and standard deviation over every
landmark of the clip (543 per frame), but read about 100 of them. Carrying all 543 through the
augmentations would cost 5x the memory and arithmetic. Instead, for each frame and each body part
(face, left hand, pose, right hand), all its landmarks are summarised by
    n, sum x, sum y, sum x^2, sum y^2, sum xy   (landmarks with x and y present)
    n_z, sum z, sum z^2                         (landmarks with z present)
An affine map of x, y (shift, scale, rotation, mirror, per body part or whole) maps these sums
exactly (first and second moments of an affine image); selecting, dropping or masking frames
selects or zeroes rows of them; removing a body part zeroes its column. So the normalisation after
any of those is exactly the one over all 543 landmarks, and computing it never touches the
points. Two augmentations are exact on the points but not on the statistics (see
augmentations.py): Gaussian noise adds its expected n*sigma^2 to the sums of squares, and
random-landmark cutout keeps each part's statistics with weight 1 - fraction.

Whole-body affine maps and mirroring are not applied to the points at once: the batch keeps a
pending map per item (a permutation of the carried points and a 2x2 matrix plus offset for x, y),
composed with each new one, and applied once, to the points a feature set reads, together with
the normalisation. An augmentation that needs the points themselves applies it first.

Conventions: points are coordinate-major, [B, T, 3, P], so that each coordinate is one contiguous
run per frame; a landmark is missing when x or y is NaN (MediaPipe drops x, y and z together; the
store makes x and y NaN together); padding frames hold NaN points and zero statistics; the first
`lengths[b]` frames of item b are its frames. Statistics and maps are float64 in a batch (each
frame's sums are stored as float32, so "exactly" means up to that rounding), points float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ablate.data import landmarks as lm

N, SX, SY, SXX, SYY, SXY, NZ, SZ, SZZ = range(9)
STATS = 9
PARTS = len(lm.PARTS)  # face, left hand, pose, right hand: the order of landmarks.PARTS
MIRROR_PARTS = [0, 3, 2, 1]  # mirroring swaps the hands; face and pose map onto themselves


@dataclass(frozen=True)
class Layout:
    """Which landmark rows a batch carries, in order, with each one's body part and the position
    of its mirror image (the carried set is closed under mirroring)."""

    row_list: tuple[int, ...]  # the landmark rows (0..542), on the host
    rows: Tensor  # [P] int64, the same on the batch's device
    part: Tensor  # [P] int64 index into landmarks.PARTS
    mirror: Tensor  # [P] int64 position of the mirrored landmark
    _positions: dict[tuple[int, ...], Tensor] = field(default_factory=dict, compare=False, repr=False)

    def positions(self, rows: tuple[int, ...]) -> Tensor:
        """Positions of `rows` among the carried rows (every one must be carried), on the device;
        made once (a copy to the device from the host would wait for the device)."""
        if rows not in self._positions:
            where = {r: i for i, r in enumerate(self.row_list)}
            self._positions[rows] = torch.tensor([where[r] for r in rows], dtype=torch.int64).to(self.rows.device)
        return self._positions[rows]

    def identity(self) -> Tensor:
        """[1, P] the identity order of the carried points."""
        return torch.arange(len(self.row_list), device=self.rows.device)[None]

    def to(self, device: torch.device) -> Layout:
        return Layout(self.row_list, self.rows.to(device), self.part.to(device), self.mirror.to(device))


def part_of(row: int) -> int:
    return next(k for k, (_, first, n) in enumerate(lm.PARTS) if first <= row < first + n)


def layout_for(rows: list[int]) -> Layout:
    """The layout carrying `rows` in their order, then the mirror images not among them."""
    wanted = list(dict.fromkeys(int(r) for r in rows))
    wanted += sorted({int(lm.MIRROR[r]) for r in wanted} - set(wanted))
    pos = {r: i for i, r in enumerate(wanted)}
    return Layout(
        row_list=tuple(wanted),
        rows=torch.tensor(wanted, dtype=torch.int64),
        part=torch.tensor([part_of(r) for r in wanted], dtype=torch.int64),
        mirror=torch.tensor([pos[int(lm.MIRROR[r])] for r in wanted], dtype=torch.int64),
    )


@dataclass(frozen=True)
class RawBatch:
    points: Tensor  # [B, T, 3, P] float32 as stored, before the pending map; NaN = missing or padding
    stats: Tensor  # [B, T, K, 9] float64 statistics of all landmarks, before the pending map; zero in padding
    lengths: Tensor  # [B] int64 frames of each item
    keys: Tensor  # [B] int64 random key of each item (see _random.item_keys), on the host
    layout: Layout
    order: Tensor | None = None  # [B, P] pending permutation: point p is stored point order[b, p]
    swapped: Tensor | None = None  # [B] pending swap of the hands' statistics (mirrored items)
    matrix: Tensor | None = None  # [B, 2, 2] pending x, y map: matrix @ (x, y) + offset
    offset: Tensor | None = None  # [B, 2]

    @property
    def frames(self) -> int:
        return self.points.shape[1]

    def mask(self) -> Tensor:
        """[B, T] True for each item's own frames."""
        return torch.arange(self.frames, device=self.lengths.device) < self.lengths[:, None]

    def take(self, index: Tensor, lengths: Tensor) -> RawBatch:
        """Frames index[b, t] of item b (clamped into range) for t < lengths[b], padding after."""
        index = index.clamp(0, max(self.frames - 1, 0))
        b = torch.arange(index.shape[0], device=index.device)[:, None]
        inside = torch.arange(index.shape[1], device=index.device) < lengths[:, None]
        points = torch.where(inside[:, :, None, None], self.points[b, index], torch.nan)
        stats = torch.where(inside[:, :, None, None], self.stats[b, index], 0.0)
        return replace(self, points=points, stats=stats, lengths=lengths)

    def padded(self, frames: int) -> RawBatch:
        if frames == self.frames:
            return self
        extra = frames - self.frames
        points = torch.nn.functional.pad(self.points, (0, 0, 0, 0, 0, extra), value=float("nan"))
        stats = torch.nn.functional.pad(self.stats, (0, 0, 0, 0, 0, extra), value=0.0)
        return replace(self, points=points, stats=stats)

    def merge(self, chosen: Tensor, other: RawBatch) -> RawBatch:
        """`other`'s items where chosen [B] is True, this batch's elsewhere (bit for bit). Both
        must have no pending map."""
        assert self.matrix is None and other.matrix is None and self.order is None, "merge materialised batches"
        frames = max(self.frames, other.frames)
        a, b = self.padded(frames), other.padded(frames)
        c = chosen[:, None, None, None]
        return replace(a, points=torch.where(c, b.points, a.points), stats=torch.where(c, b.stats, a.stats),
                       lengths=torch.where(chosen, b.lengths, a.lengths))

    def moments(self, by_part: bool) -> Tensor:
        """Statistics summed over each item's frames, after the pending map: [B, 9], or [B, K, 9]
        per body part. The whole body's are mapped as one sum (an affine map of the sums)."""
        if by_part:
            return self._current_stats().sum(dim=1)
        total = self.stats.sum(dim=(1, 2))
        if self.matrix is None or self.offset is None:
            return total
        return affine_stats(total[:, None, None], self.matrix[:, None], self.offset[:, None])[:, 0, 0]

    def _current_stats(self) -> Tensor:
        stats = self.stats
        if self.swapped is not None:
            stats = torch.where(self.swapped[:, None, None, None], stats[:, :, MIRROR_PARTS], stats)
        if self.matrix is None or self.offset is None:
            return stats
        return affine_stats(stats, self.matrix[:, None].expand(-1, PARTS, -1, -1), self.offset[:, None].expand(-1, PARTS, -1))

    def centres(self, by_part: bool) -> Tensor:
        """Mean (x, y) of the present landmarks over all frames: [B, 2] or [B, K, 2]; the image
        centre (0.5, 0.5) where none is present."""
        m = self.moments(by_part)
        n = m[..., N:N + 1]
        return torch.where(n > 0, m[..., SX:SY + 1] / n.clamp(min=1), 0.5)

    def _pending(self) -> tuple[Tensor, Tensor]:
        if self.matrix is not None and self.offset is not None:
            return self.matrix, self.offset
        b = self.points.shape[0]
        eye = torch.eye(2, dtype=torch.float64, device=self.stats.device)
        return eye.expand(b, 2, 2), torch.zeros(b, 2, dtype=torch.float64, device=self.stats.device)

    def affine(self, matrix: Tensor, offset: Tensor) -> RawBatch:
        """x, y -> matrix @ (x, y) + offset, per item: matrix [B, K, 2, 2], offset [B, K, 2]
        (float64) with K = 1 (the whole body: composed into the pending map) or one per body part
        (applied to points and statistics now). z is left alone. An identity map changes nothing."""
        if matrix.shape[1] == 1:
            m, t = self._pending()
            a, b = matrix[:, 0], offset[:, 0]
            return replace(self, matrix=a @ m, offset=(a @ t[..., None])[..., 0] + b)
        done = self.materialised()
        m = matrix[:, done.layout.part].permute(0, 2, 3, 1).float()[:, None]  # [B, 1, 2, 2, P]
        t = offset[:, done.layout.part].permute(0, 2, 1).float()[:, None]  # [B, 1, 2, P]
        x, y = done.points[:, :, 0], done.points[:, :, 1]
        new_x = m[:, :, 0, 0] * x + m[:, :, 0, 1] * y + t[:, :, 0]
        new_y = m[:, :, 1, 0] * x + m[:, :, 1, 1] * y + t[:, :, 1]
        return replace(done, points=torch.stack([new_x, new_y, done.points[:, :, 2]], dim=2),
                       stats=affine_stats(done.stats, matrix, offset))

    def mirrored(self, chosen: Tensor) -> RawBatch:
        """Mirror the chosen items (landmarks.mirror): x -> 1 - x and left and right swapped,
        composed into the pending map and permutation."""
        order = self.order if self.order is not None else self.layout.identity().expand(len(chosen), -1)
        order = torch.where(chosen[:, None], order[:, self.layout.mirror], order)
        swapped = chosen if self.swapped is None else self.swapped ^ chosen
        m, t = self._pending()
        sign = torch.where(chosen, -1.0, 1.0).double()
        m = torch.cat([m[:, :1] * sign[:, None, None], m[:, 1:]], dim=1)  # row x of (flip @ m)
        t = torch.stack([t[:, 0] * sign + chosen.double(), t[:, 1]], dim=1)  # flip @ t + (1, 0)
        return replace(self, order=order, swapped=swapped, matrix=m, offset=t)

    def view(self, rows: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """The stored points [B, T, 3, P'] of carried `rows` (after the pending permutation) and
        the pending map (matrix [B, 2, 2], offset [B, 2])."""
        pos = self.layout.positions(rows)
        if self.order is None and rows == self.layout.row_list:
            points = self.points  # all of them, in order: no copy
        elif self.order is None:
            points = self.points.index_select(3, pos)
        else:
            index = self.order[:, pos][:, None, None, :].expand(-1, self.frames, 3, -1)
            points = torch.gather(self.points, 3, index)
        m, t = self._pending()
        return points, m, t

    def materialised(self) -> RawBatch:
        """The same batch with the pending map applied to every carried point and statistic."""
        if self.matrix is None and self.order is None and self.swapped is None:
            return self
        points, m, t = self.view(self.layout.row_list)
        m, t = m.float()[:, None, :, :, None], t.float()[:, None, :, None]  # over frames and points
        x, y = points[:, :, 0], points[:, :, 1]
        xy = [m[:, :, i, 0] * x + m[:, :, i, 1] * y + t[:, :, i] for i in range(2)]
        points = torch.stack([*xy, points[:, :, 2]], dim=2)
        return replace(self, points=points, stats=self._current_stats(), order=None, swapped=None, matrix=None,
                       offset=None)

    def blank(self, frames: Tensor, points: Tensor, keep: Tensor) -> RawBatch:
        """Remove landmarks: carried point p of frame t of item b becomes NaN where frames[b, t]
        and points[b, p]; in those frames the statistics of part k are scaled by keep[b, k] (0
        removes the part, 1 keeps it)."""
        done = self.materialised()
        hit = frames[:, :, None] & points[:, None, :]
        scale = torch.where(frames[:, :, None], keep[:, None, :], 1.0)
        return replace(done, points=torch.where(hit[:, :, None], torch.nan, done.points), stats=done.stats * scale[..., None])


def affine_stats(stats: Tensor, matrix: Tensor, offset: Tensor) -> Tensor:
    """The sums of (M v + t) from the sums of v, per frame and part: sums S' = M S + n t and
    second moments Q' = M Q M^T + (M S) t^T + t (M S)^T + n t t^T, written out per entry."""
    m = matrix[:, None]  # [B, 1, K, 2, 2]
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    tx, ty = offset[:, None, :, 0], offset[:, None, :, 1]
    n, sx, sy = stats[..., N], stats[..., SX], stats[..., SY]
    sxx, syy, sxy = stats[..., SXX], stats[..., SYY], stats[..., SXY]
    mx, my = a * sx + b * sy, c * sx + d * sy  # M S
    out = stats.clone()
    out[..., SX], out[..., SY] = mx + n * tx, my + n * ty
    out[..., SXX] = a * a * sxx + 2 * a * b * sxy + b * b * syy + 2 * mx * tx + n * tx * tx
    out[..., SYY] = c * c * sxx + 2 * c * d * sxy + d * d * syy + 2 * my * ty + n * ty * ty
    out[..., SXY] = a * c * sxx + (a * d + b * c) * sxy + b * d * syy + mx * ty + my * tx + n * tx * ty
    return out
