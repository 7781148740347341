"""Feature sets: widths, hand-computed values, cropping, NaN handling, real input, ONNX parity."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ablate.components._feature_options import SHOULDERS
from ablate.components.features import FEATURES, LAG118_POINTS, SEED828_POINTS
from ablate.data import landmarks as lm
from ablate.data.kaggle import read_landmarks
from ablate.errors import UserError

# torch's own dynamo ONNX exporter uses a pytree API it has deprecated; not ours to fix
EXPORT_WARNING = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

SAMPLE_FILES = ["train_landmark_files/16069/100015657.parquet", "unlabeled/1006440534.parquet"]
LH, RH = 468, 522  # first rows of the left and right hand


def random_clip(t: int, seed: int = 0) -> torch.Tensor:
    """[t, 543, 3] in MediaPipe-like ranges, right hand undetected, frame 0 fully NaN. The
    shoulders keep their place (as a signer's do), so the body normalisation's unit is a width."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(t, 543, 3, generator=g)
    x[..., 2] -= 0.5
    x[:, SHOULDERS, :2] = torch.tensor([[0.65, 0.7], [0.35, 0.72]]) + 0.02 * x[:, SHOULDERS, :2]
    x[:, RH : RH + 21] = float("nan")
    x[0] = float("nan")
    return x


def empty_clip(t: int) -> torch.Tensor:
    return torch.full((t, 543, 3), float("nan"))


def _variants() -> list[tuple[str, dict[str, Any]]]:
    """Every feature set with its defaults, then once with each option it takes changed (a switch
    flipped, the body normalisation, 12 frames), and once with all of them (but frames): a new
    option is tested by every test below."""
    changed: dict[str, Any] = {"normalisation": "body", "frames": 12}
    out: list[tuple[str, dict[str, Any]]] = []
    for name in FEATURES.names():
        params = FEATURES.get(name).params
        options = {k: changed[k] if k in changed else not v for k, v in params.items() if k not in ("max_len", "keep_z")}
        assert all(k in changed or isinstance(params[k], bool) for k in options), f"{name}: say how to change a new option"
        out += [(name, {})] + [(name, {k: v}) for k, v in options.items()]
        if len(options) > 1:
            out.append((name, {k: v for k, v in options.items() if k != "frames"}))
    return out


VARIANTS = _variants()
VARIANT_IDS = [f"{n}[{','.join(f'{k}={v}' for k, v in p.items())}]" for n, p in VARIANTS]


def out_frames(m: Any, t: int) -> int:
    return m.options.frames or min(t, m.max_len)


@pytest.mark.parametrize("keep_z", [False, True])
@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=VARIANT_IDS)
def test_out_dim_matches_output_and_no_params(name: str, params: dict[str, Any], keep_z: bool) -> None:
    m = FEATURES.build(name, {**params, "keep_z": keep_z})
    out = m(random_clip(7))
    assert out.shape == (out_frames(m, 7), m.out_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert list(m.parameters()) == [] and m.state_dict() == {}


def test_seed828_widths_and_point_sets() -> None:
    assert FEATURES.build("seed828").out_dim == 828
    assert FEATURES.build("seed828", {"keep_z": True}).out_dim == 3 * 102 * 2 + 420
    assert len(SEED828_POINTS) == len(set(SEED828_POINTS)) == 102
    assert len(LAG118_POINTS) == len(set(LAG118_POINTS)) == 118
    assert FEATURES.build("lag118").out_dim == 118 * 2 * 3


def test_seed828_hand_computed() -> None:
    # Only two left-hand points exist. xy values 1,3,3,1 (frame 0) and 3,1 (frame 1):
    # mean 2, population std 1, so normalised values are v - 2.
    x = empty_clip(2)
    x[0, LH] = torch.tensor([1.0, 3.0, 7.0])
    x[0, LH + 1] = torch.tensor([3.0, 1.0, -7.0])
    x[1, LH] = torch.tensor([3.0, 1.0, 9.0])
    out = FEATURES.build("seed828")(x)
    expected = torch.zeros(2, 828)
    expected[0, 0:4] = torch.tensor([-1.0, 1.0, 1.0, -1.0])  # wrist, thumb point 1 of frame 0
    expected[1, 0:2] = torch.tensor([1.0, -1.0])
    expected[0, 204:206] = torch.tensor([2.0, -2.0])  # wrist motion 0 -> 1; point 1 gone -> 0
    expected[0, 408] = math.sqrt(8.0)  # left-hand pair (0, 1): |(-1, 1) - (1, -1)|
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_keep_z_normalises_z_on_its_own() -> None:
    x = empty_clip(1)
    x[0, LH : LH + 3] = torch.tensor([[1.0, 3.0, 0.0], [3.0, 1.0, 2.0], [1.0, 3.0, 4.0]])
    out = FEATURES.build("xy_min", {"keep_z": True})(x)
    # xy: 1,3,3,1,1,3 -> mean 2, std 1; z: 0,2,4 -> mean 2, std sqrt(8/3)
    s = math.sqrt(8.0 / 3.0)
    want = torch.tensor([-1.0, 1.0, -2 / s, 1.0, -1.0, 0.0, -1.0, 1.0, 2 / s])
    torch.testing.assert_close(out[0, :9], want, rtol=0, atol=1e-6)
    assert (out[0, 9:] == 0).all()


def test_lag118_lags_are_forward_differences() -> None:
    x = torch.rand(5, 543, 3, generator=torch.Generator().manual_seed(1))
    out = FEATURES.build("lag118")(x)
    n = 118 * 2
    p, lag1, lag2 = out[:, :n], out[:, n : 2 * n], out[:, 2 * n :]
    torch.testing.assert_close(lag1[:4], p[1:] - p[:4])
    torch.testing.assert_close(lag2[:3], p[2:] - p[:3])
    assert (lag1[4] == 0).all() and (lag2[3:] == 0).all()
    # the first two columns are the left wrist's x, y normalised by the clip's xy mean and std
    xy = x[..., :2].double()
    wrist = (x[:, LH, :2].double() - xy.mean()) / xy.std(unbiased=False)
    torch.testing.assert_close(p[:, :2].double(), wrist, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", FEATURES.names())
def test_centre_crop(name: str) -> None:
    m = FEATURES.build(name)
    x = torch.rand(500, 543, 3, generator=torch.Generator().manual_seed(2))
    out = m(x)
    assert out.shape == (384, m.out_dim)
    torch.testing.assert_close(out, m(x[58:442]), rtol=0, atol=0)  # (500 - 384) // 2 = 58
    assert not torch.allclose(out, m(x[57:441]))
    short = x[:385]
    torch.testing.assert_close(m(short), m(short[:384]), rtol=0, atol=0)  # (385 - 384) // 2 = 0
    assert FEATURES.build(name, {"max_len": 10})(x).shape == (10, m.out_dim)
    with pytest.raises(UserError, match="max_len"):
        FEATURES.build(name, {"max_len": 0})


def test_all_nan_hand_gives_zero_columns() -> None:
    x = random_clip(6)  # right hand all NaN
    out = FEATURES.build("seed828")(x)
    right = list(range(42, 84)) + list(range(204 + 42, 204 + 84)) + list(range(618, 828))
    assert (out[:, right] == 0).all()
    assert (out[1:, :42] != 0).any(dim=1).all()  # the left hand is there
    assert (out[0] == 0).all()  # the all-NaN frame
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("t", [1, 2, 3])
@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=VARIANT_IDS)
def test_all_nan_and_tiny_inputs_are_finite(name: str, params: dict[str, Any], t: int) -> None:
    m = FEATURES.build(name, params)
    out = m(empty_clip(t))
    assert out.shape == (out_frames(m, t), m.out_dim) and (out == 0).all()
    assert torch.isfinite(m(random_clip(t))).all()
    constant = torch.full((t, 543, 3), 0.5)  # std 0: guarded, not a division by zero
    assert torch.isfinite(m(constant)).all() and (m(constant)[:, :2] == 0).all()
    # std ~3e-8 (one float32 step at 0.5): replaced by 1, not amplified to +-1
    constant[..., 0] += torch.arange(t * 543).reshape(t, 543) % 2 * 6e-8
    assert m(constant).abs().max() < 1e-6


@pytest.mark.parametrize("path", SAMPLE_FILES)
@pytest.mark.parametrize("name", FEATURES.names())
def test_real_sample_file(name: str, path: str, sample: Path) -> None:
    frames = read_landmarks(sample / path)
    m = FEATURES.build(name)
    out = m(torch.from_numpy(frames))
    assert out.shape == (frames.shape[0], m.out_dim) and torch.isfinite(out).all()
    assert out.abs().max() < 100 and out.std() > 0.1  # normalised, not degenerate


@pytest.fixture(scope="module")
def onnx_session(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, dict[str, Any]], Any]:
    """(name, params) -> onnxruntime session of that feature set exported with a dynamic T."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    sessions: dict[str, Any] = {}

    def get(name: str, params: dict[str, Any]) -> Any:
        key = f"{name}{sorted(params.items())}"
        if key not in sessions:
            m = FEATURES.build(name, params).eval()
            t_dim = torch.export.Dim("T", min=1, max=100_000)
            program = torch.onnx.export(m, (random_clip(37),), dynamo=True, dynamic_shapes=({0: t_dim},))
            path = tmp_path_factory.mktemp("onnx") / "features.onnx"
            program.save(str(path))
            sessions[key] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sessions[key]

    return get


def run_onnx(session: Any, x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    return session.run(None, {session.get_inputs()[0].name: x})[0]


EXPORT_CASES = VARIANTS + [(n, {"keep_z": True}) for n in FEATURES.names()]


@EXPORT_WARNING
@pytest.mark.parametrize(("name", "params"), EXPORT_CASES, ids=[f"{n}{sorted(p.items())}" for n, p in EXPORT_CASES])
def test_onnx_export_parity(name: str, params: dict[str, Any], onnx_session: Callable[..., Any]) -> None:
    m = FEATURES.build(name, params)
    session = onnx_session(name, params)
    for t in (1, 2, 37, 500):
        x = random_clip(t, seed=t)  # the right hand missing: a one_hand clip is mirrored
        if t > 2:
            x[t // 2] = float("nan")
            some = torch.rand(t, 1, 1, generator=torch.Generator().manual_seed(t)) < 0.5
            x[:, LH : LH + 21] = torch.where(some, float("nan"), x[:, LH : LH + 21])
        got, want = run_onnx(session, x), m(x).numpy()
        assert got.shape == want.shape == (out_frames(m, t), m.out_dim)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"T={t}")


@EXPORT_WARNING
@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=VARIANT_IDS)
def test_onnx_parity_on_real_sample(name: str, params: dict[str, Any], sample: Path,
                                    onnx_session: Callable[..., Any]) -> None:
    real = read_landmarks(sample / SAMPLE_FILES[0])
    want = FEATURES.build(name, params)(torch.from_numpy(real)).numpy()
    np.testing.assert_allclose(run_onnx(onnx_session(name, params), real), want, rtol=0, atol=1e-5)


# ---- the batched form (training) against the per-sequence module (export) ------------------


def _nan_clip(t: int, seed: int) -> np.ndarray:
    """Like real data: hands missing for a while (whole hands), a few random landmarks missing."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(t, 543, 3)).astype(np.float32)
    x[..., 2] -= 0.5
    x[: (t + 1) // 2, RH : RH + 21] = np.nan
    x[t // 3 :, LH : LH + 5] = np.nan  # a partly missing hand
    x[rng.random((t, 543)) < 0.05] = np.nan
    return x


@pytest.mark.parametrize("keep_z", [False, True])
@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=VARIANT_IDS)
def test_batched_equals_per_sequence(name: str, params: dict[str, Any], keep_z: bool) -> None:
    from ablate.data.resident import raw_batch

    m = FEATURES.build(name, {"max_len": 16, **params, "keep_z": keep_z})
    clips = [_nan_clip(t, s) for s, t in enumerate([1, 5, 16, 23, 3, 40])]  # T = 1, T > max_len
    clips.append(np.full((4, 543, 3), np.nan, np.float32))  # nothing detected
    clips.append(lm.mirror(_nan_clip(9, 11)))  # the others' left hand dominates, this one's right
    x, mask = m.batched(raw_batch(clips, m.layout()))
    assert x.shape == (len(clips), out_frames(m, 40), m.out_dim) and mask.dtype == torch.bool
    for i, c in enumerate(clips):
        want = m(torch.from_numpy(c))
        n = want.shape[0]
        assert int(mask[i].sum()) == n and bool(mask[i, :n].all())
        torch.testing.assert_close(x[i, :n], want, rtol=1e-5, atol=2e-6)
        assert (x[i, n:] == 0).all()  # padding


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=VARIANT_IDS)
def test_batched_after_a_pending_map_equals_features_of_the_mapped_clip(name: str, params: dict[str, Any]) -> None:
    """Mirror and rotate are kept pending and folded into the normalisation: the result must be
    the features of the mirrored and rotated raw clip."""
    from ablate.components.augmentations import compose
    from ablate.data.resident import raw_batch

    m = FEATURES.build(name, {"max_len": 32, **params})
    c = _nan_clip(20, 7)
    got, _ = m.batched(compose([("hflip", {"p": 1.0}), ("rotate", {"p": 1.0, "degrees": [30, 30]})])(raw_batch([c], m.layout())))
    mirrored = lm.mirror(c).astype(np.float64)
    centre = np.nanmean(mirrored[..., :2].reshape(-1, 2), axis=0)
    a = np.deg2rad(30.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    mirrored[..., :2] = (mirrored[..., :2] - centre) @ rot.T + centre
    want = m(torch.from_numpy(mirrored.astype(np.float32)))
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=2e-5)


def test_batched_on_real_sample(sample: Path) -> None:
    from ablate.data.resident import raw_batch

    clips = [read_landmarks(sample / f) for f in SAMPLE_FILES]
    for name, params in VARIANTS:
        m = FEATURES.build(name, params)
        x, _ = m.batched(raw_batch(clips, m.layout()))
        for i, c in enumerate(clips):
            want = m(torch.from_numpy(c))  # angles of short bones carry rounding further: 1e-5
            torch.testing.assert_close(x[i, : want.shape[0]], want, rtol=1e-5, atol=1e-5)


def test_batched_lag_longer_than_the_batch_is_zero_not_garbage() -> None:
    from ablate.components.features import LandmarkFeatures
    from ablate.data.resident import raw_batch

    m = LandmarkFeatures(SEED828_POINTS, max_len=16, keep_z=True, lags=(3, 5), hand_offsets=(0, 21))
    clips = [_nan_clip(2, 1), _nan_clip(1, 2)]
    clips[0][:, LH + 3, 2] = np.nan  # z missing alone: the pairs touching that point have no distance
    x, _ = m.batched(raw_batch(clips, m.layout()))
    for i, c in enumerate(clips):
        want = m(torch.from_numpy(c))
        torch.testing.assert_close(x[i, : len(c)], want, rtol=1e-5, atol=2e-6)
    assert torch.isfinite(x).all()
