"""The landmark cache: exact contents, incremental re-runs, bad files, crash safety, verify, folds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ablate.data import kaggle
from ablate.data.cache import META, Cache
from ablate.data.ingest import ingest
from ablate.data.verify import verify
from ablate.errors import UserError
from conftest import REPO, SAMPLE_FILE, ablate_cli, random_frames, tree_state


def _csv_rows(data: Path) -> list[list[str]]:
    return [line.split(",") for line in (data / "train.csv").read_text().splitlines()[1:]]


def _matches_files(cache_dir: Path, data: Path) -> None:
    """Every sequence of the cache equals its file, read by the competition's reference loader."""
    c = Cache(cache_dir)
    rows = {r[0]: r for r in _csv_rows(data)}
    for i, rel in enumerate(c.index.column("path").to_pylist()):
        np.testing.assert_array_equal(c.sequence(i), kaggle.load_relevant_data_subset(data / rel))
        assert int(c.sequence_ids[i]) == int(rows[rel][2])
    assert not verify(cache_dir).mismatches


def test_ingest_matches_the_reference_loader(dataset: Path, tmp_path: Path) -> None:
    r = ingest(dataset, tmp_path / "c", workers=2)
    assert (r.total, r.read, r.reused, len(r.skipped)) == (30, 30, 0, 0)
    c = Cache(tmp_path / "c")
    assert len(c) == 30 and c.num_classes == 3
    for i, (rel, pid, sid, sign) in enumerate(_csv_rows(dataset)):
        np.testing.assert_array_equal(c.sequence(i), kaggle.load_relevant_data_subset(dataset / rel))
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
    before = tree_state(tmp_path / "c")
    again = ingest(dataset, tmp_path / "c")
    assert not again.changed and again.read == 0 and again.reused == 30
    assert tree_state(tmp_path / "c") == before  # nothing written
    fp = again.fingerprint
    rel = "train_landmark_files/29999/555.parquet"
    kaggle.write_landmarks(dataset / rel, random_frames(np.random.default_rng(9), 4))
    with open(dataset / "train.csv", "a") as f:
        f.write(f"{rel},29999,555,sign1\n")
    third = ingest(dataset, tmp_path / "c")
    assert third.changed and third.read == 1 and third.reused == 30 and third.fingerprint != fp
    _matches_files(tmp_path / "c", dataset)


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
    again = ingest(dataset, tmp_path / "c")  # tried again, failing for the same reasons: nothing changes
    assert not again.changed and again.read == 0 and len(again.skipped) == 4


def test_a_skipped_file_is_read_once_it_is_readable(dataset: Path, tmp_path: Path) -> None:
    """chmod 000 skips a file with its reason; once readable again, the next ingest reads it."""
    cache = tmp_path / "c"
    rel = _csv_rows(dataset)[4][0]
    (dataset / rel).chmod(0)
    try:
        r = ablate_cli("data", "ingest", str(dataset), "--cache", str(cache), unprivileged=True)
        assert r.returncode == 0 and f"skipped {rel}: cannot read (Permission denied)" in r.stderr, r.stderr
        assert "29 read" in r.stdout
    finally:
        (dataset / rel).chmod(0o644)
    r = ablate_cli("data", "ingest", str(dataset), "--cache", str(cache), unprivileged=True)
    assert r.returncode == 0 and "1 read" in r.stdout and "0 skipped" in r.stdout, r.stdout + r.stderr
    _matches_files(cache, dataset)


def _changed_one_file(dataset: Path) -> str:
    """Rewrite one landmark file with other numbers of the same shape."""
    rel = _csv_rows(dataset)[7][0]
    frames = kaggle.read_landmarks(dataset / rel)
    kaggle.write_landmarks(dataset / rel, frames + 0.25)
    return rel


@pytest.mark.parametrize("rebuild", [True, False], ids=["rebuild", "update"])
@pytest.mark.parametrize("point", ["ingest:chunk-written", "ingest:frames-written", "ingest:index-written",
                                   "ingest:committed"])
def test_an_ingest_killed_anywhere_leaves_the_old_cache_whole(dataset: Path, tmp_path: Path, point: str,
                                                             rebuild: bool) -> None:
    """SIGKILL at a checkpoint of `ingest [--rebuild]` after a file changed: the old cache opens and
    holds exactly what it held; the next plain ingest brings it up to date, and verify agrees."""
    cache = tmp_path / "c"
    ingest(dataset, cache)
    old = Cache(cache)
    held = [old.sequence(i).copy() for i in range(len(old))]
    fingerprint = old.fingerprint
    rel = _changed_one_file(dataset)
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "data", "ingest", str(dataset), "--cache", str(cache),
                             "--workers", "1", *(["--rebuild"] if rebuild else [])], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "ABLATE_STOP_AT": point, "ABLATE_STOP_FILE": str(stop)}, text=True)
    while not stop.exists():
        assert proc.poll() is None, f"ingest ended before {point}: {proc.stdout.read() if proc.stdout else ''}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if point == "ingest:committed":  # killed after the commit, before the clean-up: the new cache, whole
        _matches_files(cache, dataset)
        assert ingest(dataset, cache).changed is False
        return
    after = Cache(cache)
    assert after.fingerprint == fingerprint and len(after) == len(held)
    for i, frames in enumerate(held):
        np.testing.assert_array_equal(after.sequence(i), frames)
    report = verify(cache)  # the cache is whole; only the changed source file differs from it
    assert [m for m in report.mismatches if m.startswith("cache")] == []
    assert [m for m in report.mismatches if m.startswith("source")] == [
        f"source: {rel} changed since it was ingested (run `ablate data ingest`)"]
    r = ingest(dataset, cache)
    assert r.read == 1 and r.fingerprint != fingerprint
    _matches_files(cache, dataset)
    assert r.fingerprint == ingest(dataset, tmp_path / "clean").fingerprint  # what a clean ingest of these files gives


def test_disk_full_during_a_rebuild_keeps_the_old_cache(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    ingest(dataset, cache)
    before = tree_state(cache)
    r = ablate_cli("data", "ingest", str(dataset), "--cache", str(cache), "--rebuild", file_limit=100_000)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "File too large" in r.stderr and "landmarks-" in r.stderr and "Traceback" not in r.stderr
    assert tree_state(cache) == before  # the new frames file is removed, the old cache untouched
    _matches_files(cache, dataset)


def test_verify_names_every_mismatch(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    ingest(dataset, cache)
    rows = _csv_rows(dataset)
    rel = _changed_one_file(dataset)
    (dataset / rows[9][0]).unlink()
    c = Cache(cache)
    with open(c.frames_file, "r+b") as f:  # damage the cache itself: one float of sequence 0
        f.seek(int(c.offsets[0]) * 543 * 12 + 8)
        f.write(np.float32(7.0).tobytes())
    r = ablate_cli("data", "verify", str(cache))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(f"cache: sequence {rows[0][2]} ({rows[0][0]})" in line for line in lines)
    assert f"mismatch: source: {rel} changed since it was ingested (run `ablate data ingest`)" in lines
    assert f"mismatch: source: {rows[9][0]}: cannot read (No such file or directory)" in lines or \
        f"mismatch: source: {rows[9][0]}: file not found" in lines
    assert len(lines) == 3 and "3 mismatch(es)" in r.stdout


def test_verify_tells_skipped_files_from_mismatches(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    rows = _csv_rows(dataset)
    (dataset / rows[3][0]).write_bytes(b"not parquet")
    ingest(dataset, cache)
    assert verify(cache).mismatches == [] and verify(cache).skipped == 1  # skipped at ingest, with its reason
    text = (dataset / "train.csv").read_text().replace(f"{rows[5][0]},{rows[5][1]},{rows[5][2]},{rows[5][3]}",
                                                      f"{rows[5][0]},{rows[5][1]},{rows[5][2]},sign0")
    (dataset / "train.csv").write_text(text)
    assert rows[5][3] == "sign2"
    (mismatch,) = verify(cache).mismatches  # a relabelled row: the cache holds the old label
    assert f"{rows[5][0]}: train.csv now says sequence {rows[5][2]}, participant {rows[5][1]}, sign 'sign0'" in mismatch


def test_no_usable_sequences_writes_nothing(dataset: Path, tmp_path: Path) -> None:
    shutil.rmtree(dataset / "train_landmark_files")
    with pytest.raises(UserError, match="no usable sequences"):
        ingest(dataset, tmp_path / "c")
    assert not (tmp_path / "c" / META).exists() and not list((tmp_path / "c").glob("landmarks*"))


def test_a_damaged_cache_is_named_and_a_rebuild_repairs_it(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    ingest(dataset, cache)
    meta = json.loads((cache / META).read_text())
    (cache / META).write_text((cache / META).read_text()[:40])
    with pytest.raises(UserError, match=r"meta.json: not valid JSON .*the cache is damaged, rebuild it"):
        Cache(cache)
    r = ingest(dataset, cache)  # a damaged cache is not built on: a fresh one replaces it
    assert r.read == 30 and r.fingerprint == meta["fingerprint"]
    _matches_files(cache, dataset)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [META, json.loads((cache / META).read_text())["frames"], json.loads((cache / META).read_text())["index"]])


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
