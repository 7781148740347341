"""Synthetic data: the Kaggle layout and schema, determinism, and the planted structure
(left-handed participants, runs of undetected hands, heavy-tailed lengths, signal-free z)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ablate.data import kaggle, synth_body
from ablate.data.landmarks import (LEFT_EYE, LEFT_HAND, LIPS_OUTER, N_LANDMARKS, PARTS, RIGHT_EYE,
                                   RIGHT_HAND, mirror, pose)
from ablate.data.synth import SIGN_NAMES, SynthConfig, generate, left_handed, lengths, plan, synthesize
from ablate.errors import UserError

from conftest import SAMPLE_FILE

TINY = SynthConfig(n_signs=4, n_participants=3, reps=2, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, generate(out, TINY)


def _csv_rows(root: Path) -> list[dict[str, str]]:
    with open(root / kaggle.TRAIN_CSV, newline="") as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> list[Path]:
    return [root / r["path"] for r in _csv_rows(root)]


def test_schema_equals_the_real_files(tiny: tuple[Path, dict]) -> None:
    root, _ = tiny
    want = kaggle.SCHEMA
    physical = None
    if SAMPLE_FILE.is_file():
        want = pq.read_schema(SAMPLE_FILE).remove_metadata()
        physical = pq.ParquetFile(SAMPLE_FILE).schema
    for path in _files(root):
        assert pq.read_schema(path).remove_metadata().equals(want), path
        if physical is not None:
            assert pq.ParquetFile(path).schema.equals(physical), path


def test_rows_frames_and_ids(tiny: tuple[Path, dict]) -> None:
    root, _ = tiny
    types = np.concatenate([[name] * n for name, _, n in PARTS])
    index = np.concatenate([np.arange(n) for _, _, n in PARTS])
    firsts = []
    for path in _files(root):
        t = pq.read_table(path).to_pydict()
        n = len(t["frame"])
        assert n % N_LANDMARKS == 0 and n > 0
        frame = np.array(t["frame"]).reshape(-1, N_LANDMARKS)
        assert (frame == frame[:, :1]).all()  # one frame number per block of 543 rows
        assert (np.diff(frame[:, 0]) == 1).all()  # consecutive
        firsts.append(frame[0, 0])
        assert (np.array(t["type"]).reshape(-1, N_LANDMARKS) == types).all()
        assert (np.array(t["landmark_index"]).reshape(-1, N_LANDMARKS) == index).all()
        assert t["row_id"][:2] == [f"{frame[0, 0]}-face-0", f"{frame[0, 0]}-face-1"]
        assert t["row_id"][-1] == f"{frame[-1, 0]}-right_hand-20"
        frames = kaggle.read_landmarks(path)
        np.testing.assert_array_equal(frames, kaggle.load_relevant_data_subset(path))
        assert not np.isnan(frames[:, :468]).any() and not np.isnan(frames[:, slice(489, 522)]).any()
    assert min(firsts) > 0 and len(set(firsts)) > 1  # random first frame numbers, not 0


def test_train_csv_and_sign_map(tiny: tuple[Path, dict]) -> None:
    root, summary = tiny
    assert (root / kaggle.TRAIN_CSV).read_text().splitlines()[0] == "path,participant_id,sequence_id,sign"
    rows = _csv_rows(root)
    assert len(rows) == TINY.n_sequences == summary["sequences"] == 24
    for r in rows:
        assert r["path"] == f"train_landmark_files/{r['participant_id']}/{r['sequence_id']}.parquet"
        assert (root / r["path"]).is_file()
        assert re.fullmatch(r"[1-9]\d{4}", r["participant_id"])
        assert re.fullmatch(r"[1-9]\d{8,9}", r["sequence_id"]) and int(r["sequence_id"]) < 2**32
    assert len({r["sequence_id"] for r in rows}) == len(rows)
    assert len({r["participant_id"] for r in rows}) == 3
    sign_map = json.loads((root / kaggle.SIGN_MAP).read_text())
    assert set(sign_map) == {r["sign"] for r in rows} and len(sign_map) == 4
    assert sorted(sign_map.values()) == [0, 1, 2, 3] and list(sign_map) == sorted(sign_map)
    assert set(sign_map) <= set(SIGN_NAMES) and len(set(SIGN_NAMES)) == 250
    # the project's own readers accept it
    assert kaggle.read_sign_map(root) == sign_map
    assert kaggle.read_train_csv(root).num_rows == 24
    counts = {(r["participant_id"], r["sign"]) for r in rows}
    assert len(counts) == 12  # every participant signs every sign, reps times


def test_same_seed_same_bytes_any_workers(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tiny
    generate(tmp_path / "again", TINY, workers=2)
    for name in [kaggle.TRAIN_CSV, kaggle.SIGN_MAP] + [r["path"] for r in _csv_rows(root)]:
        assert (root / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_other_seed_other_data(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tiny
    other = SynthConfig(n_signs=4, n_participants=3, reps=2, seed=1)
    generate(tmp_path / "other", other)
    assert (root / kaggle.TRAIN_CSV).read_bytes() != (tmp_path / "other" / kaggle.TRAIN_CSV).read_bytes()
    a = synthesize(TINY, 0, 10, 0)
    b = synthesize(other, 0, 10, 0)
    assert a.shape != b.shape or not np.array_equal(a, b, equal_nan=True)


def test_interrupted_run_leaves_no_train_csv(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate(out, SynthConfig(n_signs=2, n_participants=1, reps=1))
    assert (out / kaggle.TRAIN_CSV).is_file()

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(out, TINY, progress=stop)
    assert not (out / kaggle.TRAIN_CSV).exists()
    assert not list(out.rglob("*.tmp"))


def test_summary_and_progress(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    cfg = SynthConfig(n_signs=2, n_participants=2, reps=2, seed=5)
    s = generate(tmp_path, cfg, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 8) for i in range(1, 9)]
    assert s["sequences"] == 8 and s["signs"] == 2 and s["participants"] == 2
    assert s["frames"]["total"] == sum(kaggle.read_landmarks(p).shape[0] for p in tmp_path.rglob("*.parquet"))
    assert s["frames"]["min"] <= s["frames"]["median"] <= s["frames"]["max"]


def test_left_handed_share_and_dominant_hand() -> None:
    cfg = SynthConfig(n_signs=3, n_participants=10, reps=2, seed=3)
    assert len(left_handed(cfg)) == 3  # default share 0.3
    assert len(left_handed(SynthConfig(n_participants=10, left_handed_share=0.0))) == 0
    lefties = set(left_handed(cfg))
    seen: dict[int, np.ndarray] = {}  # participant -> frames with the (left, right) hand seen
    for r in plan(cfg):
        f = synthesize(cfg, r.p, r.sign_index, r.rep)
        n = [(~np.isnan(f[:, lo, 0])).sum() for lo in (LEFT_HAND[0], RIGHT_HAND[0])]
        seen[r.participant_id] = seen.get(r.participant_id, 0) + np.array(n)
    for pid, (n_left, n_right) in seen.items():
        assert (n_left > n_right) == (pid in lefties), pid


@pytest.mark.parametrize("sign", [0, 7, 120])
def test_left_handed_is_the_exact_mirror(sign: int) -> None:
    """hflip (landmarks.mirror) exactly undoes left-handedness: same participant, share 0 vs 1."""
    right = synthesize(SynthConfig(left_handed_share=0.0), 2, sign, 1)
    left = synthesize(SynthConfig(left_handed_share=1.0), 2, sign, 1)
    np.testing.assert_allclose(mirror(left), right, atol=1e-6)
    assert not np.allclose(left[:, :, 0], right[:, :, 0], equal_nan=True)


def test_hands_drop_out_in_runs_and_whole() -> None:
    cfg = SynthConfig(seed=4)
    runs, nd_missing, dom_missing = [], [], []
    for r in plan(cfg)[:120]:
        f = synthesize(cfg, r.p, r.sign_index, r.rep)
        for lo, hi in (LEFT_HAND, RIGHT_HAND):
            nan = np.isnan(f[:, lo:hi])
            assert (nan.all(axis=(1, 2)) == nan.any(axis=(1, 2))).all()  # all 21 rows or none
            edges = np.flatnonzero(np.diff(np.concatenate([[0], nan[:, 0, 0], [0]]).astype(int)))
            runs += list(edges[1::2] - edges[::2])
        lh, rh = np.isnan(f[:, LEFT_HAND[0], 0]).mean(), np.isnan(f[:, RIGHT_HAND[0], 0]).mean()
        left = r.participant_id in left_handed(cfg)
        dom_missing.append(lh if left else rh)
        nd_missing.append(rh if left else lh)
    runs = np.array(runs)
    assert (runs >= 2).mean() > 0.5 and runs.max() >= 5  # runs, not isolated frames
    assert np.mean(nd_missing) > np.mean(dom_missing) + 0.2  # the other hand is missing more
    assert 0.05 < np.mean(dom_missing) < 0.5


def test_lengths_heavy_tailed() -> None:
    cfg = SynthConfig(n_signs=50, n_participants=10, reps=8, seed=9)
    t = lengths(cfg)
    assert len(t) == 4000
    assert 25 <= np.median(t) <= 40
    assert 0.005 <= (t > 384).mean() <= 0.03
    assert t.max() <= 600 and t.min() >= 6
    assert np.percentile(t, 90) < 80  # most are short: the tail is a few very long ones
    rows = plan(cfg)
    for i in (0, 17, 3999):  # lengths() agrees with the landmarks made
        r = rows[i]
        assert synthesize(cfg, r.p, r.sign_index, r.rep).shape[0] == t[i]


def test_z_carries_no_sign() -> None:
    cfg = SynthConfig(z_noise=0.0)
    for sign in (1, 2, 3):
        f = synthesize(cfg, 0, sign, 0)
        want = np.concatenate([synth_body.FACE_Z, synth_body.HAND_Z, synth_body.POSE_Z, synth_body.HAND_Z])
        ok = ~np.isnan(f[..., 2])
        np.testing.assert_allclose(f[..., 2][ok], np.broadcast_to(want, f.shape[:2])[ok], atol=1e-6)
    # by default the noise on z is larger than the spread of a hand's x within a frame (its shape)
    hand = synthesize(SynthConfig(), 0, 1, 0)[:, RIGHT_HAND[0]:RIGHT_HAND[1]]
    hand = hand[~np.isnan(hand[:, 0, 0])]
    assert len(hand) > 5
    assert (hand[..., 2] - synth_body.HAND_Z).std() > 1.5 * hand[..., 0].std(axis=1).mean()


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_body_geometry_is_plausible(share: float) -> None:
    cfg = SynthConfig(left_handed_share=share, long_share=0.0)
    f = synthesize(cfg, 1, 5, 0)
    # unmirrored camera: the signer's left eye, shoulder and lip corner have the larger x; for a
    # left-handed (mirrored) signer too, since mirroring swaps eye with eye and lip with lip
    assert (f[:, LEFT_EYE, 0].mean(1) > f[:, RIGHT_EYE, 0].mean(1)).all()
    assert (f[:, pose(11), 0] > f[:, pose(12), 0]).all()
    assert (f[:, LIPS_OUTER[10], 0] > f[:, LIPS_OUTER[0], 0]).all()
    eyes_y = f[:, LEFT_EYE + RIGHT_EYE, 1].mean()
    assert f[:, pose(0), 1].mean() > eyes_y and f[:, LIPS_OUTER, 1].mean() > eyes_y  # nose, lips below
    # the dominant hand, and the pose wrist on its side following it (within jitter)
    (lo, hi), wrist = (LEFT_HAND, pose(15)) if share else (RIGHT_HAND, pose(16))
    ok = ~np.isnan(f[:, lo, 0])
    assert ok.mean() > 0.4
    assert np.linalg.norm(f[ok, wrist, :2] - f[ok, lo, :2], axis=-1).max() < 0.03
    # a hand spans a plausible part of the image (a fifth to four fifths of the shoulder width)
    hand = f[ok, lo:hi, :2]
    span = np.linalg.norm(hand.max(1) - hand.min(1), axis=-1).mean()
    shoulders = np.linalg.norm(f[:, pose(11), :2] - f[:, pose(12), :2], axis=-1).mean()
    assert 0.2 * shoulders < span < 0.8 * shoulders


def test_repetitions_of_a_sign_are_closer_than_other_signs() -> None:
    """The class signal: one participant's right wrist path, resampled, for 3 signs x 4 reps."""
    cfg = SynthConfig(left_handed_share=0.0, long_share=0.0)

    def path(sign: int, rep: int) -> np.ndarray:
        w = synthesize(cfg, 0, sign, rep)[:, pose(16), :2]
        grid = np.linspace(0, len(w) - 1, 16)
        return np.stack([np.interp(grid, np.arange(len(w)), w[:, k]) for k in range(2)], 1).ravel()

    p = {(s, r): path(s, r) for s in (3, 40, 200) for r in range(4)}
    same = [np.linalg.norm(p[s, a] - p[s, b]) for s in (3, 40, 200) for a in range(4) for b in range(a)]
    diff = [np.linalg.norm(p[s, 0] - p[t, 0]) for s in (3, 40, 200) for t in (3, 40, 200) if s < t]
    assert np.mean(same) < 0.5 * np.mean(diff)


def test_planted_roll_is_off_by_default_and_rolls_only_the_chosen_right_handers() -> None:
    """Effect 2 as an ablation can find it: round(tilted_share * n) right-handed participants film
    rolled by +-tilted_deg; everything else about every participant is what it is without it."""
    import dataclasses
    import math

    from ablate.data.synth_motion import participant, planted_roll

    base = SynthConfig(n_participants=10, seed=5, tilt_deg=3.0)
    assert all(planted_roll(base, p) == 0.0 for p in range(10))
    cfg = dataclasses.replace(base, tilted_share=0.3, tilted_deg=25.0)
    rolls = [planted_roll(cfg, p) for p in range(10)]
    rolled = [p for p in range(10) if rolls[p]]
    assert len(rolled) == 3 and {abs(r) for r in rolls if r} == {25.0}
    assert not set(rolled) & set(p for p in range(10) if participant(cfg, p).left_handed)
    for p in range(10):
        a, b = participant(base, p), participant(cfg, p)
        assert math.isclose(math.degrees(b.tilt), math.degrees(a.tilt) + rolls[p], abs_tol=1e-9)
        assert dataclasses.replace(b, tilt=a.tilt) == a
    level = next(p for p in range(10) if p not in rolled)
    np.testing.assert_array_equal(synthesize(base, level, 3, 0), synthesize(cfg, level, 3, 0))
    assert not np.allclose(synthesize(base, rolled[0], 3, 0), synthesize(cfg, rolled[0], 3, 0), equal_nan=True)


@pytest.mark.parametrize("bad", [{"n_signs": 0}, {"n_signs": 251}, {"reps": 0}, {"difficulty": -1.0},
                                 {"left_handed_share": 1.5}, {"z_noise": -1.0}, {"tilted_share": -0.1},
                                 {"tilted_deg": 120.0}, {"left_handed_share": 0.5, "tilted_share": 0.6},
                                 {"tilted_share": float("nan")}, {"tilt_deg": float("inf")}])
def test_bad_config_is_a_user_error(bad: dict) -> None:
    with pytest.raises(UserError, match="synthetic data"):
        SynthConfig(**bad)


def test_cache_only_equals_generate_then_ingest(synth_cache: Path, tmp_path: Path) -> None:
    """`ablate data synth --cache-only` writes the cache that ingesting the files would give."""
    from ablate.data.cache import Cache
    from conftest import ablate_cli

    out = tmp_path / "direct"
    r = ablate_cli("data", "synth", "--out", str(out), "--signs", "6", "--participants", "5", "--reps", "4",
                   "--seed", "11", "--cache-only", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "wrote a cache of 120 sequences" in r.stdout
    direct, ingested = Cache(out), Cache(synth_cache)
    assert not any(out.glob("train_landmark_files")) and not (out / "train.csv").exists()
    for col in ("sequence_id", "participant_id", "label", "length", "digest"):
        assert direct.index.column(col).to_pylist() == ingested.index.column(col).to_pylist(), col
    assert direct.sign_map == ingested.sign_map
    i = int(np.argmax(direct.lengths))
    np.testing.assert_array_equal(direct.sequence(i), ingested.sequence(i))
    assert ablate_cli("data", "verify", str(out)).returncode == 0  # no files to compare with: cache checks only


def test_cache_only_onto_a_file_is_one_line_exit_2(tmp_path: Path) -> None:
    from conftest import ablate_cli

    target = tmp_path / "a-file"
    target.write_text("keep me")
    r = ablate_cli("data", "synth", "--out", str(target), "--signs", "2", "--cache-only")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--out" in r.stderr and "is a file" in r.stderr
    assert target.read_text() == "keep me"
