"""The landmark cache: exact contents, incremental re-runs, bad files, interruption, folds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ablate.data import cache as cache_mod
from ablate.data import kaggle
from ablate.data.cache import Cache
from ablate.data.ingest import ingest
from ablate.errors import UserError
from conftest import SAMPLE_FILE, random_frames


def _csv_rows(data: Path) -> list[list[str]]:
    return [line.split(",") for line in (data / "train.csv").read_text().splitlines()[1:]]


def test_ingest_matches_the_reference_loader(dataset: Path, tmp_path: Path) -> None:
    r = ingest(dataset, tmp_path / "c", workers=2)
    assert (r.total, r.read, r.reused, len(r.skipped)) == (30, 30, 0, 0)
    c = Cache(tmp_path / "c")
    assert len(c) == 30 and c.num_classes == 3
    for i, (rel, pid, sid, sign) in enumerate(_csv_rows(dataset)):
        ref = kaggle.load_relevant_data_subset(dataset / rel)
        np.testing.assert_array_equal(c.sequence(i), ref)
        assert (c.sequence_ids[i], c.participants[i], c.labels[i]) == (int(sid), int(pid), int(sign[-1]))


def test_real_sample_ingests(sample: Path, tmp_path: Path) -> None:
    r = ingest(sample, tmp_path / "c")
    c = Cache(tmp_path / "c")
    assert r.read == 1 and c.sequence(0).shape == (105, 543, 3)
    np.testing.assert_array_equal(c.sequence(0), kaggle.read_landmarks(SAMPLE_FILE))
    info = c.info()
    assert info["signs_in_map"] == 250 and info["frames_max"] == 105
    assert info["missing_right_hand"] == 1.0 and 0 < info["missing_left_hand"] < 1


def test_rerun_is_a_noop_and_new_rows_are_incremental(dataset: Path, tmp_path: Path) -> None:
    ingest(dataset, tmp_path / "c")
    before = (tmp_path / "c" / "index.parquet").stat().st_mtime_ns
    again = ingest(dataset, tmp_path / "c")
    assert not again.changed and again.read == 0 and again.reused == 30
    assert (tmp_path / "c" / "index.parquet").stat().st_mtime_ns == before
    fp = again.fingerprint
    rel = "train_landmark_files/29999/555.parquet"
    kaggle.write_landmarks(dataset / rel, random_frames(np.random.default_rng(9), 4))
    with open(dataset / "train.csv", "a") as f:
        f.write(f"{rel},29999,555,sign1\n")
    third = ingest(dataset, tmp_path / "c")
    assert third.changed and third.read == 1 and third.reused == 30 and third.fingerprint != fp
    c = Cache(tmp_path / "c")
    np.testing.assert_array_equal(c.sequence(30), kaggle.read_landmarks(dataset / rel))
    np.testing.assert_array_equal(c.sequence(0), kaggle.read_landmarks(dataset / _csv_rows(dataset)[0][0]))


def test_bad_files_are_skipped_counted_and_reported(dataset: Path, tmp_path: Path) -> None:
    rows = _csv_rows(dataset)
    (dataset / rows[0][0]).unlink()  # missing
    p = dataset / rows[1][0]
    p.write_bytes(p.read_bytes()[:100])  # truncated
    with open(dataset / "train.csv", "a") as f:
        f.write(f"{rows[2][0]},{rows[2][1]},{rows[2][2]},sign0\n")  # duplicate id
        f.write(f"{rows[3][0]},{rows[3][1]},77,nosuchsign\n")  # unknown sign
    r = ingest(dataset, tmp_path / "c")
    reasons = {s["path"]: s["reason"] for s in r.skipped}
    assert len(r.skipped) == 4 and r.read == 28
    assert reasons[rows[0][0]] == "file not found"
    assert "not a readable parquet" in reasons[rows[1][0]]
    assert "nosuchsign" in reasons[rows[3][0]]
    assert len(Cache(tmp_path / "c")) == 28
    again = ingest(dataset, tmp_path / "c")  # the bad files are not read again
    assert not again.changed and again.read == 0 and len(again.skipped) == 4


def test_interrupted_ingest_leaves_the_previous_cache_intact(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cdir = tmp_path / "c"
    ingest(dataset, cdir)
    first = Cache(cdir).sequence(5).copy()
    rel = "train_landmark_files/29999/556.parquet"
    kaggle.write_landmarks(dataset / rel, random_frames(np.random.default_rng(3), 6))
    with open(dataset / "train.csv", "a") as f:
        f.write(f"{rel},29999,556,sign2\n")

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_write_index", boom)
    with pytest.raises(KeyboardInterrupt):
        ingest(dataset, cdir)  # frames appended, index not yet replaced
    monkeypatch.undo()
    c = Cache(cdir)
    assert len(c) == 30
    np.testing.assert_array_equal(c.sequence(5), first)
    r = ingest(dataset, cdir)  # continues: reads only the new file, drops the stray tail
    assert r.read == 1 and r.reused == 30
    c = Cache(cdir)
    assert c._frames.shape[0] == int((c.offsets + c.lengths).max())
    np.testing.assert_array_equal(c.sequence(30), kaggle.read_landmarks(dataset / rel))


def test_no_usable_sequences_writes_nothing(dataset: Path, tmp_path: Path) -> None:
    shutil.rmtree(dataset / "train_landmark_files")
    with pytest.raises(UserError, match="no usable sequences"):
        ingest(dataset, tmp_path / "c")
    assert not (tmp_path / "c" / "meta.json").exists()


def test_missing_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no ablate cache here"):
        Cache(tmp_path)


def test_folds_are_stored_and_follow_the_data(dataset: Path, tmp_path: Path) -> None:
    ingest(dataset, tmp_path / "c")
    c = Cache(tmp_path / "c")
    f = c.folds(5, seed=0)
    stored = json.loads((tmp_path / "c" / "folds.json").read_text())
    assert stored["grouped-k5-s0"]["fold"] == f.tolist()
    assert stored["grouped-k5-s0"]["fingerprint"] == c.fingerprint
    np.testing.assert_array_equal(Cache(tmp_path / "c").folds(5, seed=0), f)
    for g in np.unique(c.participants):
        assert len(np.unique(f[c.participants == g])) == 1
