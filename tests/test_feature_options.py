"""The write-up's preprocessing options of seed828, against hand-computed values.

Batched = per-sequence, ONNX parity and NaN handling of every option are held by the registry
tests in test_features.py (which switch on each option of every feature set)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ablate.components._feature_options import BONES, EXTERNAL_ROWS, JOINTS, SHOULDERS, Options, resample_index
from ablate.components.features import FEATURES, XY_MIN_POINTS, LandmarkFeatures
from ablate.config import Component
from ablate.data import landmarks as lm
from ablate.errors import UserError
from ablate.parts import build_parts
from ablate.spaces import recipe_config
from test_features import LH, empty_clip, random_clip

P828 = 102 * 2  # the point columns of seed828 (x, y per point); lags follow, then distances


def _rotated(x: torch.Tensor, degrees: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    out = x.clone()
    out[..., :2] = scale * (x[..., :2] @ rot.T) + torch.tensor(shift)
    return out


def test_body_normalisation_levels_the_shoulders_at_half_a_width() -> None:
    x = random_clip(9, seed=3)
    m = FEATURES.build("seed828", {"normalisation": "body"})
    out = m(x)  # the pose points follow the 42 hand points; shoulders 11 and 12 come first
    left, right = out[1:, 84:86].mean(0), out[1:, 86:88].mean(0)  # frame 0 is all NaN (zeros)
    torch.testing.assert_close(left, torch.tensor([0.5, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(right, torch.tensor([-0.5, 0.0]), atol=1e-5, rtol=0)


def test_body_normalisation_ignores_where_and_how_the_signer_is_filmed() -> None:
    """A camera roll, zoom and shift of the whole clip leave the body-normalised features as they
    were (and change the global ones, which are not rotation invariant)."""
    x = random_clip(12, seed=4)
    moved = _rotated(x, 25.0, 1.7, (0.2, -0.1))
    body = FEATURES.build("seed828", {"normalisation": "body", "joint_angles": True, "bone_angles": True})
    torch.testing.assert_close(body(moved), body(x), atol=2e-4, rtol=1e-4)
    plain = FEATURES.build("seed828")
    assert not torch.allclose(plain(moved), plain(x), atol=1e-2)


def test_body_normalisation_without_shoulders_is_the_global_one() -> None:
    x = random_clip(6, seed=5)
    x[:, SHOULDERS[1]] = float("nan")  # never both shoulders in one frame
    body, plain = FEATURES.build("seed828", {"normalisation": "body"}), FEATURES.build("seed828")
    torch.testing.assert_close(body(x), plain(x), atol=1e-6, rtol=0)


def test_resampling_picks_the_centre_frame_of_each_slice() -> None:
    assert resample_index(torch.tensor(4), 4).tolist() == [0, 1, 2, 3]
    assert resample_index(torch.tensor(1), 3).tolist() == [0, 0, 0]
    assert resample_index(torch.tensor(10), 4).tolist() == [1, 3, 6, 8]  # floor((2i + 1) * 10 / 8)
    assert resample_index(torch.tensor(3), 6).tolist() == [0, 0, 1, 1, 2, 2]
    idx = resample_index(torch.tensor([1, 7, 500]), 32)
    assert idx.shape == (3, 32) and (idx.max(1).values < torch.tensor([1, 7, 500])).all()
    m = FEATURES.build("seed828", {"frames": 8})
    x = random_clip(30, seed=6)
    torch.testing.assert_close(m(x), FEATURES.build("seed828")(x[resample_index(torch.tensor(30), 8)]))
    assert m.max_frames == 8 and m(random_clip(400)).shape == (8, 828)
    with pytest.raises(UserError, match="frames must be an integer >= 0"):
        FEATURES.build("seed828", {"frames": -1})


def test_one_hand_mirrors_a_left_handed_clip_onto_the_right() -> None:
    one, both = FEATURES.build("seed828", {"one_hand": True}), FEATURES.build("seed828")
    assert one.out_dim == 81 * 2 * 2 + 210
    left = random_clip(10, seed=7)  # the right hand is missing: the left dominates
    right = torch.from_numpy(lm.mirror(left.numpy()))
    torch.testing.assert_close(one(left), one(right), atol=1e-6, rtol=0)
    # a right-handed clip is not mirrored: both hands' features without the left hand's columns
    keep = list(range(42, P828)) + list(range(P828 + 42, 2 * P828)) + list(range(2 * P828 + 210, 828))
    torch.testing.assert_close(one(right), both(right)[:, keep], atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="normalisation"):
        FEATURES.build("seed828", {"normalisation": "shoulders"})


def _hand_clip() -> torch.Tensor:
    """One frame: the left hand flat along +x (every bone (1, 0) long), its index finger bent up
    90 degrees at its middle joint (6); the right hand missing."""
    x = empty_clip(1)
    for k in range(21):
        x[0, LH + k, :2] = torch.tensor([float(k % 4 or 4), 0.1 * ((k - 1) // 4)])  # finger f at y 0.1 f
    x[0, LH, :2] = torch.tensor([0.0, 0.0])
    x[0, LH + 7, :2] = x[0, LH + 6, :2] + torch.tensor([0.0, 1.0])
    x[0, LH + 8, :2] = x[0, LH + 7, :2] + torch.tensor([0.0, 1.0])
    x[0, SHOULDERS[0], :2] = torch.tensor([1.0, 0.0])  # level shoulders one unit apart: body = identity + shift
    x[0, SHOULDERS[1], :2] = torch.tensor([0.0, 0.0])
    return x


def test_joint_and_bone_angles_by_hand() -> None:
    x = _hand_clip()
    m = FEATURES.build("seed828", {"normalisation": "body", "joint_angles": True, "bone_angles": True})
    extra = m(x)[0, 828:]
    joints, bones = extra[:30], extra[30:70]  # the left hand's, then the right's (missing: zeros)
    assert (extra[70:] == 0).all()
    at = {j[1]: i for i, j in enumerate(JOINTS)}
    cos, sin = joints[:15], joints[15:]
    assert float(cos[at[6]]) == pytest.approx(0.0, abs=1e-6) and float(sin[at[6]]) == pytest.approx(1.0, abs=1e-6)
    assert float(cos[at[7]]) == pytest.approx(1.0, abs=1e-6) and float(sin[at[7]]) == pytest.approx(0.0, abs=1e-6)
    to = {b[1]: i for i, b in enumerate(BONES)}
    assert float(bones[to[7]]) == pytest.approx(0.0, abs=1e-6) and float(bones[20 + to[7]]) == pytest.approx(1.0, abs=1e-6)
    assert float(bones[to[10]]) == pytest.approx(1.0, abs=1e-6) and float(bones[20 + to[10]]) == pytest.approx(0.0, abs=1e-6)


def test_external_distances_by_hand() -> None:
    x = random_clip(5, seed=8)
    m = FEATURES.build("seed828", {"external_distances": True})
    got = m(x)[:, 828:].reshape(5, 2, 21, len(EXTERNAL_ROWS))  # left hand, right hand (missing)
    norm = m.normalise(x)[:, :, :2].double()
    want = torch.cdist(norm[:, LH : LH + 21], norm[:, list(EXTERNAL_ROWS)]).nan_to_num(0.0)
    torch.testing.assert_close(got[:, 0].double(), want, atol=1e-5, rtol=0)
    assert (got[:, 1] == 0).all()
    with pytest.raises(UserError, match="external_distances needs"):
        LandmarkFeatures(XY_MIN_POINTS, 8, False, options=Options(external_distances=True))


@pytest.mark.parametrize(("params", "positions"), [({}, 385), ({"max_len": 64}, 65), ({"frames": 12}, 13)])
def test_the_transformer_is_sized_to_the_feature_sets_frames(params: dict, positions: int) -> None:
    """A crop-length or frames experiment resizes the model's positions with it (max_len 0)."""
    parts = build_parts(recipe_config("smoke").replace(features=Component("seed828", params)), 5)
    assert parts.model.pos.shape[0] == positions == parts.features.max_frames + 1
    x = torch.from_numpy(np.random.default_rng(0).random((500, 543, 3), dtype=np.float32))
    assert parts.features(x).shape[0] == positions - 1
