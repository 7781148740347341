"""Batched augmentations: the contract for every raw-landmark entry (padding untouched, NaN stays
NaN, p = 0 is the identity, independence from batch size and position, determinism), hand-checked
geometry, the normalisation statistics after each map, temporal index maps, mixup, compose()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.components._random import item_keys
from ablate.components._rawbatch import N, SX, SXX, SXY, SY, SYY, RawBatch, layout_for
from ablate.components.augmentations import AUGMENTATIONS, compose
from ablate.components.features import SEED828_POINTS
from ablate.data import landmarks as lm
from ablate.data.kaggle import read_landmarks
from ablate.data.resident import prepare_chunk, raw_batch
from ablate.errors import UserError

SEQUENCE = AUGMENTATIONS.names(tag="sequence")
KEEPS_T = {"shift", "scale", "rotate", "hflip", "noise", "local_affine", "temporal_mask", "spatial_cutout"}
KEEPS_NAN = {"shift", "scale", "rotate", "noise", "local_affine"}  # NaN positions stay exactly
EXACT_STATS = {"shift", "scale", "rotate", "hflip", "local_affine", "frame_drop", "speed", "temporal_mask"}
LAYOUT = layout_for(SEED828_POINTS)
LH, RH = 468, 522  # first rows of the left and right hand


def clip(t: int, seed: int = 0) -> np.ndarray:
    """[t, 543, 3] float32 in [0, 1], right hand missing in the first half, some random NaN landmarks."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(t, 543, 3)).astype(np.float32)
    x[: (t + 1) // 2, RH : RH + 21] = np.nan
    x[rng.random((t, 543)) < 0.05] = np.nan
    return x


def batch(clips: list[np.ndarray], items: list[int] | None = None, layout=LAYOUT) -> RawBatch:
    items_t = torch.tensor(items if items is not None else list(range(len(clips))))
    return raw_batch(clips, layout, keys=item_keys(items_t, 0, 0, 0, 0))


def apply(name: str, b: RawBatch, **params: object) -> RawBatch:
    return compose([(name, {"p": 1.0, **params})])(b).materialised()


def own(b: RawBatch, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Item i's own frames: points [T, 3, P] and statistics [T, K, 9]."""
    n = int(b.lengths[i])
    return b.points[i, :n].numpy(), b.stats[i, :n].numpy()


def full_stats(points: np.ndarray) -> np.ndarray:
    """What the statistics must be for raw frames (all 543 landmarks carried)."""
    return prepare_chunk(points, layout_for(list(range(543))))[1]


@pytest.mark.parametrize("name", SEQUENCE)
def test_contract(name: str) -> None:
    clips = [clip(1, 1), clip(2, 2), clip(30, 3)]
    b = batch(clips)
    before = b.points.clone(), b.stats.clone()
    out = apply(name, b)
    assert torch.equal(b.points.isnan(), before[0].isnan()) and torch.equal(b.stats, before[1])  # input kept
    assert out.points.dtype == torch.float32 and out.stats.dtype == torch.float64
    for i, c in enumerate(clips):
        n = int(out.lengths[i])
        assert n >= 1 and (n == len(c) if name in KEEPS_T else True)
        # padding untouched: NaN points, zero statistics after the item's own frames
        assert out.points[i, n:].isnan().all() and (out.stats[i, n:] == 0).all()
        pts, _ = own(out, i)
        src = b.points[i, : len(c)].isnan().numpy()
        if name in KEEPS_NAN:
            np.testing.assert_array_equal(np.isnan(pts), src)
        if name == "hflip":
            np.testing.assert_array_equal(np.isnan(pts), src[:, :, LAYOUT.mirror.numpy()])
        if name in KEEPS_T - KEEPS_NAN - {"hflip"}:  # masking: may only add NaNs
            assert not (src & ~np.isnan(pts)).any()
    empty = batch([np.full((5, 543, 3), np.nan, np.float32)])
    assert apply(name, empty).points.isnan().all()  # nothing is invented for missing landmarks


@pytest.mark.parametrize("name", SEQUENCE)
def test_p0_is_identity_p1_changes(name: str) -> None:
    b = batch([clip(30), clip(12, 1)])
    same = compose([(name, {"p": 0.0})])(b).materialised()
    assert torch.equal(same.lengths, b.lengths)
    t = b.frames  # speed may pad further (to the longest any factor could give): padding only
    assert same.points[:, t:].isnan().all() and (same.stats[:, t:] == 0).all()
    assert torch.equal(same.points[:, :t].nan_to_num(7.0), b.points.nan_to_num(7.0)) and torch.equal(same.stats[:, :t], b.stats)
    changed = apply(name, b)
    assert changed.frames != b.frames or not torch.equal(changed.points.nan_to_num(7.0), b.points.nan_to_num(7.0))


@pytest.mark.parametrize("name", SEQUENCE)
def test_independent_of_batch_size_and_position_and_repeatable(name: str) -> None:
    clips = [clip(t, s) for s, t in enumerate([9, 20, 4, 15])]
    pipe = compose([(name, {"p": 0.7})])
    together = pipe(batch(clips, [10, 11, 12, 13])).materialised()
    again = pipe(batch(clips, [10, 11, 12, 13])).materialised()
    assert torch.equal(together.points.nan_to_num(7.0), again.points.nan_to_num(7.0))
    reordered = pipe(batch([clips[2], clips[0]], [12, 10])).materialised()
    alone = pipe(batch([clips[3]], [13])).materialised()
    for got, (i, j) in [(reordered, (0, 2)), (reordered, (1, 0)), (alone, (0, 3))]:
        a, sa = own(got, i)
        b, sb = own(together, j)
        np.testing.assert_array_equal(np.nan_to_num(a, nan=7.0), np.nan_to_num(b, nan=7.0))
        np.testing.assert_allclose(sa, sb, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", sorted(EXACT_STATS))
def test_statistics_follow_the_landmarks_exactly(name: str) -> None:
    """With every landmark carried, the statistics after an augmentation are those of its points."""
    everything = layout_for(list(range(543)))
    b = batch([clip(12, 4), clip(7, 5)], layout=everything)
    out = apply(name, b)
    for i in range(2):
        pts, stats = own(out, i)
        want = full_stats(np.ascontiguousarray(pts.transpose(0, 2, 1)))
        cols = [N, SX, SY, SXX, SYY, SXY]
        np.testing.assert_allclose(stats[..., cols], want[..., cols], rtol=1e-5, atol=1e-3)


def test_hflip_twice_is_identity_on_real_sample(sample: Path) -> None:
    x = read_landmarks(sample / "train_landmark_files/16069/100015657.parquet")
    b = batch([x])
    twice = apply("hflip", apply("hflip", b))
    assert torch.equal(twice.points.isnan(), b.points.isnan()) and torch.equal(twice.stats[..., :1], b.stats[..., :1])
    assert torch.equal(twice.points[:, :, 1:].nan_to_num(), b.points[:, :, 1:].nan_to_num())  # y, z exactly
    torch.testing.assert_close(twice.points[:, :, 0], b.points[:, :, 0], rtol=0, atol=1.2e-7, equal_nan=True)
    torch.testing.assert_close(twice.stats, b.stats, rtol=1e-9, atol=1e-6)


def test_hflip_moves_left_hand_to_right_rows() -> None:
    x = np.full((2, 543, 3), np.nan, np.float32)
    x[:, LH + 4] = [0.25, 0.5, -0.125]  # left thumb tip
    x[:, lm.pose(15)] = [0.75, 0.625, 0.0]  # left wrist (pose)
    out = apply("hflip", batch([x]))
    pos = {r: i for i, r in enumerate(LAYOUT.row_list)}
    np.testing.assert_array_equal(out.points[0, :, :, pos[RH + 4]].numpy(), [[0.75, 0.5, -0.125]] * 2)
    np.testing.assert_array_equal(out.points[0, :, :, pos[lm.pose(16)]].numpy(), [[0.25, 0.625, 0.0]] * 2)
    assert out.points[0, :, :, pos[LH + 4]].isnan().all()
    assert int(out.points.isnan().sum()) == int(batch([x]).points.isnan().sum())


def _two_points(a: list[float], b: list[float]) -> RawBatch:
    x = np.full((1, 543, 3), np.nan, np.float32)
    x[0, LH], x[0, LH + 1] = a, b
    return batch([x])


def _pair(out: RawBatch) -> np.ndarray:
    pos = {r: i for i, r in enumerate(LAYOUT.row_list)}
    return out.points[0, 0, :, [pos[LH], pos[LH + 1]]].numpy().T


def test_rotate_shift_scale_noise_values() -> None:
    b = _two_points([0.3, 0.5, 0.2], [0.7, 0.5, 0.4])  # centre (0.5, 0.5)
    # +90 turns +x towards +y: (0.7, 0.5) -> (0.5, 0.7), (0.3, 0.5) -> (0.5, 0.3); z kept
    np.testing.assert_allclose(_pair(apply("rotate", b, degrees=(90, 90))), [[0.5, 0.3, 0.2], [0.5, 0.7, 0.4]], atol=1e-6)
    np.testing.assert_allclose(_pair(apply("shift", b, shift=(0.1, 0.1))), [[0.4, 0.6, 0.2], [0.8, 0.6, 0.4]], atol=1e-6)
    np.testing.assert_allclose(_pair(apply("scale", b, scale=(2, 2))), [[0.1, 0.5, 0.2], [0.9, 0.5, 0.4]], atol=1e-6)
    assert torch.equal(apply("noise", b, std=(0, 0)).points.nan_to_num(), b.points.nan_to_num())
    x = batch([clip(50)])
    noisy = (apply("noise", x, std=(0.01, 0.01)).points - x.points).numpy()
    assert 0.009 < np.nanstd(noisy[:, :, :2]) < 0.011 and np.nanmax(np.abs(noisy[:, :, 2])) == 0


def test_local_affine_moves_each_part_about_its_own_centre() -> None:
    b = batch([clip(5)])
    moved = apply("local_affine", b, scale=(1, 1), degrees=(0, 0), shift=(0.1, 0.1))
    torch.testing.assert_close(moved.points[:, :, :2], b.points[:, :, :2] + 0.1, equal_nan=True)
    turned = apply("local_affine", b, scale=(1, 1), degrees=(30, 30), shift=(0, 0))
    torch.testing.assert_close(turned.centres(by_part=True), b.centres(by_part=True))  # each part's centre stays


def test_speed_and_frame_drop_are_index_maps() -> None:
    x = clip(100)
    b = batch([x])
    fast = apply("speed", b, factor=(2, 2))
    assert int(fast.lengths[0]) == 50  # frames 0, 2, ..., 98
    assert torch.equal(fast.points[0, :50].nan_to_num(), b.points[0, ::2].nan_to_num())
    assert torch.equal(apply("speed", b, factor=(1, 1)).points.nan_to_num(), b.points.nan_to_num())
    slow = apply("speed", batch([clip(10)]), factor=(0.5, 0.5))
    assert int(slow.lengths[0]) == 19  # times 0, 0.5, ..., 9: nearest frames 0, 1, 1, 2, 2, ...
    assert int(apply("speed", batch([clip(1)]), factor=(0.5, 2)).lengths[0]) == 1
    one = apply("frame_drop", b, rate=(1, 1))
    assert int(one.lengths[0]) == 1
    assert any(torch.equal(one.points[0, 0].nan_to_num(), f.nan_to_num()) for f in b.points[0])
    assert torch.equal(apply("frame_drop", b, rate=(0, 0)).points.nan_to_num(), b.points.nan_to_num())
    assert 1 <= int(apply("frame_drop", b, rate=(0.5, 0.5)).lengths[0]) < 100


def test_temporal_mask_and_spatial_cutout() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (10, 543, 3)).astype(np.float32)
    b = batch([x])
    out = apply("temporal_mask", b, span=(0.5, 0.5))
    gone = out.points[0].isnan().all(dim=2).all(dim=1).numpy()
    assert gone.sum() == 5 and np.ptp(np.flatnonzero(gone)) == 4  # one run of 5 frames
    assert (out.stats[0, gone] == 0).all() and torch.equal(out.stats[0, ~gone], b.stats[0, ~gone])
    assert not apply("temporal_mask", batch([x[:1]]), span=(1, 1)).points.isnan().any()  # never the only frame
    part = apply("spatial_cutout", b, part_prob=1.0, span=(1, 1))
    hit = part.points[0].isnan().all(dim=0).all(dim=0).numpy()  # carried points removed in every frame
    kinds = set(LAYOUT.part[hit].tolist())
    assert len(kinds) == 1 and (LAYOUT.part == kinds.pop()).sum() == hit.sum()
    assert (part.stats[0].sum(dim=0)[:, N] == 0).sum() == 1  # one part's statistics zeroed
    spots = apply("spatial_cutout", b, part_prob=0.0, fraction=(0.5, 0.5), span=(0.3, 0.3))
    hit = spots.points[0].isnan().any(dim=1)
    assert int(hit.any(dim=1).sum()) == 3 and 20 < int(hit.any(dim=0).sum()) < 80


def test_common_random_numbers_across_pipelines() -> None:
    """An augmentation draws the same numbers for an item whatever comes before it in the list."""
    b = batch([clip(8), clip(6, 1)])
    alone = compose([("shift", {"p": 0.5})])(b)
    after = compose([("hflip", {"p": 0.0}), ("shift", {"p": 0.5})])(b)
    torch.testing.assert_close(alone.offset, after.offset)


def test_a_pipeline_draws_what_each_augmentation_draws_alone() -> None:
    """Pipeline hashes every augmentation's parameters in one go (Draws.for_streams): the same
    numbers, bit for bit, as each augmentation drawing its own."""
    entries = [(name, {"p": 0.7}) for name in SEQUENCE] + [("shift", {"p": 0.7})]  # shift twice: two streams
    pipe = compose(entries)
    b = batch([clip(9), clip(5, 1), clip(12, 2)], items=[4, 17, 3])
    one_by_one = b
    for aug, stream in zip(pipe.sequence, pipe.streams()):
        one_by_one = aug(one_by_one, stream)
    together, one_by_one = pipe(b).materialised(), one_by_one.materialised()
    assert torch.equal(together.lengths, one_by_one.lengths)
    torch.testing.assert_close(together.points, one_by_one.points, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(together.stats, one_by_one.stats, rtol=0, atol=0, equal_nan=True)


def test_mixup() -> None:
    b, t, f = 8, 6, 5
    x = torch.randn(b, t, f)
    mask = torch.rand(b, t) < 0.7
    y = torch.arange(b)
    mix = AUGMENTATIONS.build("mixup", {"p": 1.0, "alpha": 0.4})
    xo, mo, y2, lam = mix(x, mask, y, torch.Generator().manual_seed(0))
    assert xo.shape == x.shape and mo.shape == mask.shape and mo.dtype == torch.bool
    assert y2.shape == (b,) and lam.shape == (b,) and lam.dtype == torch.float32
    assert ((lam >= 0) & (lam <= 1)).all() and sorted(y2.tolist()) == list(range(b))
    torch.testing.assert_close(xo, x * lam[:, None, None] + x[y2] * (1 - lam[:, None, None]))
    assert torch.equal(mo, mask | mask[y2])
    again = mix(x, mask, y, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((xo, mo, y2, lam), again))
    xo, mo, _, lam = AUGMENTATIONS.build("mixup", {"p": 0.0})(x, mask, y, torch.Generator().manual_seed(0))
    assert torch.equal(xo, x) and torch.equal(mo, mask) and (lam == 1).all()


def test_compose() -> None:
    pipe = compose([("hflip", {"p": 1.0}), ("mixup", {}), ("shift", {"p": 1.0, "shift": [0.25, 0.25]})])
    assert [a.name for a in pipe.sequence] == ["hflip", "shift"] and len(pipe.batch) == 1
    x = clip(4)
    want = lm.mirror(x)
    want[..., :2] += 0.25
    got = pipe(batch([x])).materialised()
    expected = batch([want])
    torch.testing.assert_close(got.points, expected.points, atol=1e-6, rtol=0, equal_nan=True)
    torch.testing.assert_close(got.stats, expected.stats, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("hflp", {})], "did you mean 'hflip'"),
        ([("rotate", {"degree": (1, 2)})], "did you mean 'degrees'"),
        ([("rotate", {"degrees": (5, 1)})], "degrees"),
        ([("scale", {"scale": 1.2})], "two numbers"),
        ([("shift", {"p": 1.5})], "p must be in [0, 1]"),
        ([("speed", {"factor": (0, 1)})], "factor"),
        ([("mixup", {"alpha": 0})], "alpha"),
        ([("mixup", {}), ("mixup", {})], "at most one batch-level"),
    ],
)
def test_compose_errors(entries: list, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compose(entries)


def test_random_hash_matches_unsigned_64_bit_arithmetic() -> None:
    """torch's int64 multiply must wrap like uint64 for the draws to be the same on every device."""
    from ablate.components._random import mix

    values = [0, 1, 2**62 + 12345, -3, 987654321]
    got = mix(torch.tensor(values, dtype=torch.int64))
    M = 2**64

    def ref(x: int) -> int:
        x %= M
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) % M
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) % M
        return x ^ (x >> 31)

    assert [int(v) % M for v in got] == [ref(v) for v in values]
