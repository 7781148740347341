"""The landmark cache: a ragged on-disk layout that the full data set never has to fit in RAM.

A cache directory holds
    landmarks.f32   all frames of all sequences, float32 [n_frames_total, 543, 3], memory-mapped
    index.parquet   one row per sequence: ids, sign, label, frame offset and length, file stats
    meta.json       version, source, sign map, fingerprint, skipped files with their reasons
    folds.json      fold assignments, keyed by kind/k/seed, valid for one fingerprint

Ingest only ever appends to landmarks.f32 past the last frame the current index uses and replaces
index.parquet and meta.json atomically at the end, so an interrupted ingest leaves the previous
cache intact, and the next run continues from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.data import kaggle
from ablate.data.folds import GROUPED, fold_key, make_folds
from ablate.data.landmarks import LEFT_HAND, N_LANDMARKS, RIGHT_HAND
from ablate.errors import UserError
from ablate.files import atomic_write

CACHE_VERSION = 1
LANDMARKS = "landmarks.f32"
INDEX = "index.parquet"
META = "meta.json"
FOLDS = "folds.json"
FRAME_BYTES = N_LANDMARKS * 3 * 4


def ablate_home() -> Path:
    """Where ablate keeps generated data, caches and studies ($ABLATE_HOME, default ./.ablate)."""
    return Path(os.environ.get("ABLATE_HOME", ".ablate"))


def default_cache_dir(data_dir: Path) -> Path:
    """A cache location per source directory, outside it (data directories may be read-only)."""
    src = data_dir.resolve()
    tag = hashlib.blake2b(str(src).encode(), digest_size=4).hexdigest()
    return ablate_home() / "cache" / f"{src.name or 'data'}-{tag}"


def resolve_cache_dir(path: Path) -> Path:
    """Accept either a cache directory or a data directory (whose default cache is used)."""
    if (path / META).is_file():
        return path
    if (path / kaggle.TRAIN_CSV).is_file():
        return default_cache_dir(path)
    return path


@dataclass
class IngestReport:
    """What one ingest run did."""

    cache_dir: Path
    total: int = 0  # rows in train.csv
    reused: int = 0
    read: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    frames_read: int = 0
    fingerprint: str = ""
    changed: bool = True  # False when the cache was already up to date (nothing written)


def _stats(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _load_one(path: Path) -> tuple[np.ndarray | None, str]:
    try:
        return kaggle.read_landmarks(path), ""
    except kaggle.BadFile as e:
        return None, str(e)


def _missing_counts(frames: np.ndarray) -> tuple[int, int, int]:
    """Frames with the left hand, the right hand and both hands undetected (all NaN)."""
    left = np.isnan(frames[:, LEFT_HAND[0] : LEFT_HAND[1]]).all(axis=(1, 2))
    right = np.isnan(frames[:, RIGHT_HAND[0] : RIGHT_HAND[1]]).all(axis=(1, 2))
    return int(left.sum()), int(right.sum()), int((left & right).sum())


def ingest(
    data_dir: Path,
    cache_dir: Path | None = None,
    workers: int | None = None,
    rebuild: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Build or update the cache for a Kaggle-layout data directory. Incremental; a no-op if current."""
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: not a directory (expected a Kaggle asl-signs data directory)")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(data_dir)
    sign_map = kaggle.read_sign_map(data_dir)
    csv = kaggle.read_train_csv(data_dir).to_pydict()
    cache_dir.mkdir(parents=True, exist_ok=True)
    old = None if rebuild else _load_existing(cache_dir, data_dir)
    old_rows = {r["path"]: r for r in old["rows"]} if old else {}
    old_skips = {s["path"]: s for s in old["meta"]["skipped"]} if old else {}
    end = max((r["offset"] + r["length"] for r in old_rows.values()), default=0)

    report = IngestReport(cache_dir=cache_dir, total=len(csv["path"]))
    rows: list[dict[str, Any]] = []
    to_read: list[tuple[int, dict[str, Any], Path]] = []
    seen_ids: set[int] = set()
    for rel, pid, sid, sign in zip(csv["path"], csv["participant_id"], csv["sequence_id"], csv["sign"]):
        path = data_dir / rel
        stats = _stats(path)
        base = {"path": rel, "participant_id": pid, "sequence_id": sid, "sign": sign}
        reason = ""
        if sign not in sign_map:
            reason = f"sign {sign!r} is not in {kaggle.SIGN_MAP}"
        elif sid in seen_ids:
            reason = f"duplicate sequence_id {sid}"
        elif stats is None:
            reason = "file not found"
        if reason:
            report.skipped.append({**base, "reason": reason, "size": None, "mtime_ns": None})
            continue
        seen_ids.add(sid)
        size, mtime = stats
        prev = old_rows.get(rel)
        if prev and (prev["size"], prev["mtime_ns"]) == (size, mtime) and prev["sequence_id"] == sid:
            rows.append({**prev, **base, "label": sign_map[sign]})
            report.reused += 1
            continue
        skip = old_skips.get(rel)
        if skip and (skip["size"], skip["mtime_ns"]) == (size, mtime):
            report.skipped.append({**base, **{k: skip[k] for k in ("reason", "size", "mtime_ns")}})
            continue
        to_read.append((len(rows), {**base, "label": sign_map[sign], "size": size, "mtime_ns": mtime}, path))
        rows.append({})  # placeholder, filled below or dropped if the file is bad

    bad: set[int] = set()
    if to_read:
        end = _append_frames(cache_dir / LANDMARKS, end, to_read, rows, bad, report, workers, progress)
    rows = [r for i, r in enumerate(rows) if i not in bad]
    report.seconds = time.perf_counter() - t0
    unchanged = old and report.read == 0 and [r["path"] for r in rows] == [r["path"] for r in old["rows"]] and sorted(
        (s["path"], s["reason"]) for s in report.skipped) == sorted((s["path"], s["reason"]) for s in old["meta"]["skipped"])
    if unchanged:
        report.fingerprint = old["meta"]["fingerprint"]
        report.changed = False
        return report
    _write_index(cache_dir, data_dir, sign_map, rows, report)
    return report


def _append_frames(
    file: Path,
    end: int,
    to_read: list[tuple[int, dict[str, Any], Path]],
    rows: list[dict[str, Any]],
    bad: set[int],
    report: IngestReport,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Read files in parallel (pyarrow releases the GIL) and append their frames in order."""
    workers = workers or os.cpu_count() or 1
    mode = "r+b" if file.exists() else "w+b"
    with open(file, mode) as out, ThreadPoolExecutor(workers) as pool:
        out.truncate(end * FRAME_BYTES)  # drop a tail left by an interrupted run
        out.seek(end * FRAME_BYTES)
        # map() keeps order; chunks bound the memory held by finished-but-unwritten results
        chunk = 256 * workers
        for start in range(0, len(to_read), chunk):
            part = to_read[start : start + chunk]
            for (slot, row, path), (frames, reason) in zip(part, pool.map(_load_one, [p for *_, p in part])):
                if frames is None:
                    report.skipped.append({**{k: row[k] for k in ("path", "participant_id", "sequence_id", "sign", "size", "mtime_ns")}, "reason": reason})
                    bad.add(slot)
                    continue
                out.write(np.ascontiguousarray(frames, dtype=np.float32).tobytes())
                miss = _missing_counts(frames)
                digest = hashlib.blake2b(frames.tobytes(), digest_size=8).hexdigest()
                rows[slot] = {**row, "offset": end, "length": len(frames), "digest": digest,
                              "missing_left": miss[0], "missing_right": miss[1], "missing_both": miss[2]}
                end += len(frames)
                report.read += 1
                report.frames_read += len(frames)
            if progress:
                progress(min(start + chunk, len(to_read)), len(to_read))
        out.flush()
        os.fsync(out.fileno())
    return end


_INDEX_SCHEMA = pa.schema([
    ("sequence_id", pa.int64()), ("participant_id", pa.int64()), ("sign", pa.string()),
    ("label", pa.int32()), ("path", pa.string()), ("offset", pa.int64()), ("length", pa.int32()),
    ("size", pa.int64()), ("mtime_ns", pa.int64()), ("digest", pa.string()),
    ("missing_left", pa.int32()), ("missing_right", pa.int32()), ("missing_both", pa.int32()),
])


def _fingerprint(rows: list[dict[str, Any]], sign_map: dict[str, int]) -> str:
    """Content hash: sign map plus every sequence's id, participant, label and frame digest."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(sign_map, sort_keys=True).encode())
    for r in sorted(rows, key=lambda r: r["sequence_id"]):
        h.update(f"{r['sequence_id']},{r['participant_id']},{r['label']},{r['digest']};".encode())
    return h.hexdigest()


def _write_index(cache_dir: Path, data_dir: Path, sign_map: dict[str, int], rows: list[dict[str, Any]], report: IngestReport) -> None:
    if not rows:
        raise UserError(f"{data_dir}: no usable sequences ({len(report.skipped)} skipped); cache not written")
    table = pa.Table.from_pylist(rows, schema=_INDEX_SCHEMA)
    tmp = cache_dir / (INDEX + ".tmp")
    pq.write_table(table, tmp)
    report.fingerprint = _fingerprint(rows, sign_map)
    meta = {
        "version": CACHE_VERSION, "source": str(data_dir.resolve()), "fingerprint": report.fingerprint,
        "sign_map": sign_map, "sequences": len(rows), "frames": int(sum(r["length"] for r in rows)),
        "skipped": report.skipped, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.replace(tmp, cache_dir / INDEX)
    atomic_write(cache_dir / META, json.dumps(meta, indent=1).encode())


def _load_existing(cache_dir: Path, data_dir: Path) -> dict[str, Any] | None:
    """The previous cache's rows and meta, or None when there is none usable to build on."""
    try:
        meta = json.loads((cache_dir / META).read_text())
        rows = pq.read_table(cache_dir / INDEX).to_pylist()
    except (OSError, ValueError, pa.ArrowException):
        return None
    if meta.get("version") != CACHE_VERSION or meta.get("source") != str(data_dir.resolve()):
        return None
    size = (cache_dir / LANDMARKS).stat().st_size if (cache_dir / LANDMARKS).exists() else 0
    if any((r["offset"] + r["length"]) * FRAME_BYTES > size for r in rows):
        return None  # landmarks file shorter than the index says: rebuild from scratch
    return {"meta": meta, "rows": rows}


class Cache:
    """Read access to an ingested cache: sequences as memory-mapped views, labels, folds."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir = resolve_cache_dir(Path(cache_dir))
        try:
            self.meta: dict[str, Any] = json.loads((cache_dir / META).read_text())
            index = pq.read_table(cache_dir / INDEX)
        except FileNotFoundError:
            raise UserError(f"{cache_dir}: no ablate cache here (run `ablate data ingest DIR` first)") from None
        if self.meta.get("version") != CACHE_VERSION:
            raise UserError(f"{cache_dir}: cache version {self.meta.get('version')}, expected {CACHE_VERSION}; re-run ingest with --rebuild")
        self.dir = cache_dir
        cols = {c: index.column(c).to_numpy() for c in ("sequence_id", "participant_id", "label", "offset", "length")}
        self.sequence_ids: np.ndarray = cols["sequence_id"]
        self.participants: np.ndarray = cols["participant_id"]
        self.labels: np.ndarray = cols["label"].astype(np.int64)
        self.offsets: np.ndarray = cols["offset"]
        self.lengths: np.ndarray = cols["length"].astype(np.int64)
        self.index = index
        total = int((self.offsets + self.lengths).max())
        self._frames = np.memmap(cache_dir / LANDMARKS, dtype=np.float32, mode="r", shape=(total, N_LANDMARKS, 3))

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def sign_map(self) -> dict[str, int]:
        return dict(self.meta["sign_map"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["sign_map"])

    def __len__(self) -> int:
        return len(self.labels)

    def sequence(self, i: int) -> np.ndarray:
        """Sequence i as float32 [T, 543, 3] (a read-only memory-mapped view, NaNs kept)."""
        o = int(self.offsets[i])
        return self._frames[o : o + int(self.lengths[i])]

    def folds(self, k: int = 5, seed: int = 0, kind: str = GROUPED) -> np.ndarray:
        """Fold id per sequence, computed once per data fingerprint and stored with the cache."""
        path = self.dir / FOLDS
        key = fold_key(kind, k, seed)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        entry = stored.get(key)
        if entry and entry.get("fingerprint") == self.fingerprint and len(entry["fold"]) == len(self):
            return np.asarray(entry["fold"], dtype=np.int8)
        fold = make_folds(self.labels, self.participants, k, seed, kind)
        stored = {k2: v for k2, v in stored.items() if v.get("fingerprint") == self.fingerprint}
        stored[key] = {"fingerprint": self.fingerprint, "kind": kind, "k": k, "seed": seed, "fold": fold.tolist()}
        atomic_write(path, json.dumps(stored).encode())
        return fold

    def info(self) -> dict[str, Any]:
        """Counts for `ablate data info`."""
        lengths = self.lengths
        tab = self.index
        frames = int(lengths.sum())
        share = lambda c: float(np.asarray(tab.column(c)).sum()) / max(frames, 1)  # noqa: E731
        return {
            "cache": str(self.dir), "source": self.meta["source"], "fingerprint": self.fingerprint,
            "sequences": len(self), "participants": int(len(np.unique(self.participants))),
            "signs": int(len(np.unique(self.labels))), "signs_in_map": self.num_classes,
            "frames_total": frames, "frames_min": int(lengths.min()),
            "frames_median": float(np.median(lengths)), "frames_max": int(lengths.max()),
            "missing_left_hand": share("missing_left"), "missing_right_hand": share("missing_right"),
            "missing_both_hands": share("missing_both"),
            "missing_a_hand": share("missing_left") + share("missing_right") - share("missing_both"),
            "skipped": len(self.meta["skipped"]),
        }
