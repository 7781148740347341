"""Augmentations: the generic contract for every sequence-level entry, hand-checked geometry,
temporal resampling, mixup and compose()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.components.augmentations import AUGMENTATIONS, BODY_PARTS, compose
from ablate.data import landmarks as lm
from ablate.data.kaggle import read_landmarks
from ablate.errors import UserError

SEQUENCE = AUGMENTATIONS.names(tag="sequence")
KEEPS_T = {"shift", "scale", "rotate", "hflip", "noise", "local_affine", "temporal_mask", "spatial_cutout"}
KEEPS_NAN = {"shift", "scale", "rotate", "noise", "local_affine"}  # NaN positions stay exactly
LH, RH = 468, 522  # first rows of the left and right hand


def clip(t: int, seed: int = 0) -> np.ndarray:
    """[t, 543, 3] float32 in [0, 1], right hand missing in the first half, some random NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(t, 543, 3)).astype(np.float32)
    x[: (t + 1) // 2, RH : RH + 21] = np.nan
    x[rng.random((t, 543)) < 0.05] = np.nan
    return x


def nan_clip(t: int) -> np.ndarray:
    return np.full((t, 543, 3), np.nan, dtype=np.float32)


def apply(name: str, x: np.ndarray, seed: int = 0, **params: object) -> np.ndarray:
    return AUGMENTATIONS.build(name, {"p": 1.0, **params})(x, np.random.default_rng(seed))


@pytest.mark.parametrize("t", [1, 2, 30])
@pytest.mark.parametrize("name", SEQUENCE)
def test_contract(name: str, t: int) -> None:
    x = clip(t)
    before = x.copy()
    out = apply(name, x)
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[1:] == (543, 3)
    assert out.shape[0] >= 1 and out is not x
    np.testing.assert_array_equal(x, before)  # the input is not modified
    if name in KEEPS_T:
        assert out.shape[0] == t
    if name in KEEPS_NAN:
        np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
    if name == "hflip":
        np.testing.assert_array_equal(np.isnan(out), np.isnan(x)[:, lm.MIRROR])
    if name in KEEPS_T - KEEPS_NAN - {"hflip"}:  # masking: may only add NaNs
        assert not (np.isnan(x) & ~np.isnan(out)).any()
    assert np.isnan(apply(name, nan_clip(t))).all()  # nothing is invented for missing landmarks


@pytest.mark.parametrize("name", SEQUENCE)
def test_p0_is_identity_p1_changes(name: str) -> None:
    x = clip(30)
    aug = AUGMENTATIONS.build(name, {"p": 0.0})
    out = aug(x, np.random.default_rng(0))
    assert out is not x
    np.testing.assert_array_equal(out, x)
    changed = apply(name, x, seed=3)
    assert changed.shape != x.shape or not np.array_equal(changed, x, equal_nan=True)


@pytest.mark.parametrize("name", SEQUENCE)
def test_deterministic_for_a_seed(name: str) -> None:
    x = clip(30)
    aug = AUGMENTATIONS.build(name, {"p": 0.7})
    outs = [[aug(x, rng) for _ in range(4)] for rng in (np.random.default_rng(5), np.random.default_rng(5))]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_hflip_twice_is_identity_exact_on_dyadic_values() -> None:
    # x = k / 1024 makes 1 - x exact in float32, so two flips give back the very same bits
    x = np.round(clip(20) * 1024) / 1024
    np.testing.assert_array_equal(apply("hflip", apply("hflip", x)), x)


def test_hflip_twice_is_identity_on_real_sample(sample: Path) -> None:
    x = read_landmarks(sample / "train_landmark_files/16069/100015657.parquet")
    twice = apply("hflip", apply("hflip", x))
    # NaNs, y and z exactly; x within float32 rounding of 1 - x (exactness is impossible there:
    # [0, 0.5) holds more float32 values than (0.5, 1], so x -> 1 - x cannot be a float involution)
    np.testing.assert_array_equal(np.isnan(twice), np.isnan(x))
    np.testing.assert_array_equal(twice[..., 1:], x[..., 1:])
    np.testing.assert_allclose(twice[..., 0], x[..., 0], rtol=0, atol=1.2e-7)


def test_hflip_moves_left_hand_to_right_rows() -> None:
    x = nan_clip(2)
    x[:, LH + 4] = [0.25, 0.5, -0.125]  # left thumb tip
    x[:, lm.pose(15)] = [0.75, 0.625, 0.0]  # left wrist (pose)
    out = apply("hflip", x)
    np.testing.assert_array_equal(out[:, RH + 4], [[0.75, 0.5, -0.125]] * 2)
    np.testing.assert_array_equal(out[:, lm.pose(16)], [[0.25, 0.625, 0.0]] * 2)
    assert np.isnan(out[:, LH : LH + 21]).all() and np.isnan(out[:, lm.pose(15)]).all()
    assert np.isnan(out).sum() == np.isnan(x).sum()


def test_rotate_90_degrees() -> None:
    x = nan_clip(1)
    x[0, 0] = [0.3, 0.5, 0.2]
    x[0, 1] = [0.7, 0.5, 0.4]  # centre (0.5, 0.5)
    out = apply("rotate", x, degrees=(90, 90))
    # +90 turns +x towards +y: (0.7, 0.5) -> (0.5, 0.7), (0.3, 0.5) -> (0.5, 0.3); z kept
    np.testing.assert_allclose(out[0, :2], [[0.5, 0.3, 0.2], [0.5, 0.7, 0.4]], atol=1e-6)
    assert np.isnan(out[0, 2:]).all()


def test_shift_scale_noise_values() -> None:
    x = nan_clip(1)
    x[0, 0] = [0.4, 0.5, 0.2]
    x[0, 1] = [0.6, 0.5, 0.4]
    np.testing.assert_allclose(apply("shift", x, shift=(0.1, 0.1))[0, :2], [[0.5, 0.6, 0.2], [0.7, 0.6, 0.4]], atol=1e-6)
    np.testing.assert_allclose(apply("scale", x, scale=(2, 2))[0, :2], [[0.3, 0.5, 0.2], [0.7, 0.5, 0.4]], atol=1e-6)
    np.testing.assert_array_equal(apply("noise", x, std=(0, 0)), x)
    noisy = apply("noise", clip(50), std=(0.01, 0.01)) - clip(50)
    assert 0.009 < np.nanstd(noisy[..., :2]) < 0.011 and np.nanmax(np.abs(noisy[..., 2])) == 0


def test_local_affine_moves_each_part_by_its_shift() -> None:
    x = clip(5)
    same = apply("local_affine", x, scale=(1, 1), degrees=(0, 0), shift=(0, 0))
    np.testing.assert_allclose(same, x, atol=1e-6)
    moved = apply("local_affine", x, scale=(1, 1), degrees=(0, 0), shift=(0.1, 0.1))
    np.testing.assert_allclose(moved[..., :2], x[..., :2] + 0.1, atol=1e-6)
    # a rotation of one part keeps its own centre but not the whole clip's
    turned = apply("local_affine", x, scale=(1, 1), degrees=(30, 30), shift=(0, 0))
    for rows in BODY_PARTS.values():
        part, before = turned[:, rows, :2], x[:, rows, :2]
        np.testing.assert_allclose(np.nanmean(part.reshape(-1, 2), 0), np.nanmean(before.reshape(-1, 2), 0), atol=1e-5)


def test_speed() -> None:
    x = clip(100)
    fast = apply("speed", x, factor=(2, 2))
    assert fast.shape[0] == 50  # frames 0, 2, ..., 98
    np.testing.assert_array_equal(fast, x[::2])
    np.testing.assert_array_equal(apply("speed", x, factor=(1, 1)), x)
    y = clip(10)
    y[1, 7] = np.nan
    slow = apply("speed", y, factor=(0.5, 0.5))
    assert slow.shape[0] == 19  # times 0, 0.5, ..., 9
    np.testing.assert_allclose(slow[1, 20:30], (y[0, 20:30] + y[1, 20:30]) / 2, atol=1e-7)
    assert np.isnan(slow[1:4, 7]).all() and not np.isnan(slow[0, 7]).any()  # 0.5, 1, 1.5 touch frame 1
    assert apply("speed", clip(1), factor=(0.5, 2)).shape[0] == 1


def test_frame_drop() -> None:
    x = clip(20)
    one = apply("frame_drop", x, rate=(1, 1))
    assert one.shape[0] == 1 and any(np.array_equal(one[0], f, equal_nan=True) for f in x)
    np.testing.assert_array_equal(apply("frame_drop", x, rate=(0, 0)), x)
    some = apply("frame_drop", x, rate=(0.5, 0.5))
    assert 1 <= some.shape[0] < 20


def test_temporal_mask_and_spatial_cutout() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (10, 543, 3)).astype(np.float32)
    out = apply("temporal_mask", x, span=(0.5, 0.5))
    gone = np.isnan(out).all(axis=(1, 2))
    assert gone.sum() == 5 and np.ptp(np.flatnonzero(gone)) == 4  # one run of 5 frames
    np.testing.assert_array_equal(out[~gone], x[~gone])
    assert not np.isnan(apply("temporal_mask", x[:1], span=(1, 1))).any()  # never the only frame
    assert (~np.isnan(apply("temporal_mask", x, span=(1, 1))).all(axis=(1, 2))).sum() == 1
    part = apply("spatial_cutout", x, part_prob=1.0, span=(1, 1))
    rows = np.isnan(part).all(axis=(0, 2))
    assert any(np.array_equal(np.flatnonzero(rows), list(r)) for r in BODY_PARTS.values())
    np.testing.assert_array_equal(part[:, ~rows], x[:, ~rows])
    spots = apply("spatial_cutout", x, part_prob=0.0, fraction=(0.5, 0.5), span=(0.3, 0.3))
    hit = np.isnan(spots).any(axis=2)
    assert hit.any(axis=1).sum() == 3 and 150 < hit.any(axis=0).sum() < 400


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
    _, _, _, lam = AUGMENTATIONS.build("mixup", {"p": 1.0, "alpha": 1000.0})(x, mask, y, torch.Generator().manual_seed(0))
    assert ((lam - 0.5).abs() < 0.1).all()


def test_compose() -> None:
    pipe = compose([("hflip", {"p": 1.0}), ("mixup", {}), ("shift", {"p": 1.0, "shift": [0.25, 0.25]})])
    assert [a.name for a in pipe.sequence] == ["hflip", "shift"] and len(pipe.batch) == 1
    x = clip(4)
    want = lm.mirror(x)
    want[..., :2] += 0.25
    np.testing.assert_allclose(pipe(x, np.random.default_rng(0)), want, atol=1e-6)
    empty = compose([])
    assert empty(x, np.random.default_rng(0)) is not x


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
