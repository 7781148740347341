"""`ablate data ingest`: build or update the landmark cache of a Kaggle-layout directory.

Crash safety, the rule: no byte an index ever pointed to is written again.
- An update appends the frames of new or changed files at the end of the committed frames file
  (past every frame of this and of earlier indexes, which a running study may still be reading),
  and writes a new index file beside the old one. Only --rebuild compacts, into a new file.
- A rebuild (or a first ingest) writes a new frames file of its own.
- meta.json, replaced atomically, commits the new state; only then are the files it no longer
  names deleted. Killed anywhere before that, the previous cache opens exactly as it was.
A file skipped for a reason is read again on the next run (its problem may be gone). One ingest
at a time per cache: a second one waits for the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate import checkpoints
from ablate.data import kaggle
from ablate.data.cache import (CACHE_VERSION, FRAME_BYTES, META, V1_FRAMES, V1_INDEX, default_cache_dir,
                               fingerprint, frames_digest, read_committed)
from ablate.data.landmarks import LEFT_HAND, RIGHT_HAND
from ablate.errors import UserError
from ablate.files import atomic_write

LOCK = ".ingest.lock"


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


@dataclass
class _Target:
    """Where new frames go: the committed frames file past `start`, or a new file from 0."""

    path: Path
    start: int
    new_file: bool


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    with open(cache_dir / LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


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
    except OSError as e:  # unreadable (permissions): skipped, and tried again next time
        return None, f"cannot read ({e.strerror or e})"


def _missing_counts(frames: np.ndarray) -> tuple[int, int, int]:
    """Frames with the left hand, the right hand and both hands undetected (all NaN)."""
    left = np.isnan(frames[:, LEFT_HAND[0] : LEFT_HAND[1]]).all(axis=(1, 2))
    right = np.isnan(frames[:, RIGHT_HAND[0] : RIGHT_HAND[1]]).all(axis=(1, 2))
    return int(left.sum()), int(right.sum()), int((left & right).sum())


def _existing(cache_dir: Path, data_dir: Path) -> dict[str, Any] | None:
    """The committed cache to build on, or None (none, another source, or damaged: start afresh)."""
    try:
        meta, index, frames = read_committed(cache_dir)
    except UserError:
        return None
    if meta.get("source") != str(data_dir.resolve()):
        return None
    rows = index.to_pylist()
    return {"meta": meta, "rows": rows, "frames": frames}


def _frames_in(path: Path) -> int:
    """Whole frames in a frames file: new frames go after all of them (a partial one is overwritten)."""
    return path.stat().st_size // FRAME_BYTES


def _check_cache_dir(cache_dir: Path, flag: str = "--cache") -> None:
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UserError(f"{flag} {cache_dir}: is a file, expected a directory for the cache")
    cache_dir.mkdir(parents=True, exist_ok=True)


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
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: expected a positive number of reader threads")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(data_dir)
    sign_map = kaggle.read_sign_map(data_dir)
    csv = kaggle.read_train_csv(data_dir).to_pydict()
    _check_cache_dir(cache_dir)
    with _locked(cache_dir):
        old = None if rebuild else _existing(cache_dir, data_dir)
        report = IngestReport(cache_dir=cache_dir, total=len(csv["path"]))
        rows, to_read = _plan(data_dir, csv, sign_map, old, report)
        target = (_Target(old["frames"], _frames_in(old["frames"]), False) if old is not None
                  else _Target(cache_dir / f"landmarks-{secrets.token_hex(4)}.f32", 0, True))
        report.changed = _commit(cache_dir, str(data_dir.resolve()), sign_map, rows, to_read, target, report, old,
                                 Reader(_load_one, ThreadPoolExecutor, workers), progress)
        if not report.changed:
            report.fingerprint = old["meta"]["fingerprint"]  # type: ignore[index]
        report.seconds = time.perf_counter() - t0
        _remove_unreferenced(cache_dir)
        return report


def _plan(data_dir: Path, csv: dict[str, list[Any]], sign_map: dict[str, int], old: dict[str, Any] | None,
          report: IngestReport) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any], Path]]]:
    """Rows to keep as they are, and files to read (each with its slot in the row list)."""
    old_rows = {r["path"]: r for r in old["rows"]} if old else {}
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
            report.skipped.append({**base, "reason": reason})
            continue
        seen_ids.add(sid)
        prev = old_rows.get(rel)
        if prev and (prev["size"], prev["mtime_ns"]) == stats and prev["sequence_id"] == sid:
            rows.append({**prev, **base, "label": sign_map[sign]})
            report.reused += 1
            continue
        to_read.append((len(rows), {**base, "label": sign_map[sign], "size": stats[0], "mtime_ns": stats[1]}, path))
        rows.append({})  # placeholder, filled when read, dropped if the file is bad
    return rows, to_read


def _same(old: dict[str, Any], rows: list[dict[str, Any]], report: IngestReport) -> bool:
    """Nothing to write: the same rows (same labels) and the same skipped files for the same reasons."""
    key = lambda r: (r["path"], r["sequence_id"], r["participant_id"], r["label"], r["digest"])  # noqa: E731
    skips = lambda ss: sorted((s["path"], s["reason"]) for s in ss)  # noqa: E731
    return ([key(r) for r in rows] == [key(r) for r in old["rows"]]
            and skips(report.skipped) == skips(old["meta"].get("skipped", [])))


@dataclass
class Reader:
    """How frames are obtained: load(source) -> (frames or None, why not), run on `pool` (threads
    for parquet files, whose reader releases the GIL; processes for synthesis)."""

    load: Callable[[Any], tuple[np.ndarray | None, str]]
    pool: Callable[[int], Executor]
    workers: int | None


def _commit(cache_dir: Path, source: str, sign_map: dict[str, int], rows: list[dict[str, Any]],
            to_read: list[tuple[int, dict[str, Any], Any]], target: _Target, report: IngestReport,
            old: dict[str, Any] | None, reader: Reader, progress: Callable[[int, int], None] | None) -> bool:
    """Write the frames, then a new index, then meta.json; undo the first two if anything fails.
    Returns False, having written nothing, when the result equals the committed cache."""
    index_path = cache_dir / f"index-{secrets.token_hex(4)}.parquet"
    try:
        bad = _append_frames(target, to_read, rows, report, reader, progress) if to_read else set()
        rows[:] = [r for i, r in enumerate(rows) if i not in bad]
        if old is not None and report.read == 0 and _same(old, rows, report):
            return False  # skipped files failed again, for the same reasons: nothing to commit
        if not rows:
            raise UserError(f"{source}: no usable sequences ({len(report.skipped)} skipped); cache not written")
        checkpoints.reached("ingest:frames-written")
        pq.write_table(pa.Table.from_pylist(rows, schema=_INDEX_SCHEMA), index_path)
        checkpoints.reached("ingest:index-written")
        report.fingerprint = fingerprint(rows, sign_map)
        meta = {
            "version": CACHE_VERSION, "source": source, "fingerprint": report.fingerprint,
            "frames": target.path.name, "index": index_path.name, "sign_map": sign_map, "sequences": len(rows),
            "frames_total": int(sum(r["length"] for r in rows)), "skipped": report.skipped,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write(cache_dir / META, json.dumps(meta, indent=1).encode())
    except BaseException:  # the committed files are untouched; drop what this run added
        index_path.unlink(missing_ok=True)
        if target.new_file:
            target.path.unlink(missing_ok=True)
        elif target.path.exists():
            os.truncate(target.path, target.start * FRAME_BYTES)
        raise
    checkpoints.reached("ingest:committed")
    return True


def _append_frames(target: _Target, to_read: list[tuple[int, dict[str, Any], Any]], rows: list[dict[str, Any]],
                   report: IngestReport, reader: Reader, progress: Callable[[int, int], None] | None) -> set[int]:
    """Load sequences in parallel and write their frames in order, from target.start; fills each
    loaded sequence's row and returns the slots of those that were skipped."""
    workers = reader.workers or os.cpu_count() or 1
    end, bad = target.start, set()
    try:
        with open(target.path, "r+b" if target.path.exists() else "w+b") as out, reader.pool(workers) as pool:
            out.truncate(end * FRAME_BYTES)  # drops only a partial frame that an interrupted run left
            out.seek(end * FRAME_BYTES)
            chunk = 256 * workers  # map() keeps order; chunks bound the results held in memory
            for start in range(0, len(to_read), chunk):
                part = to_read[start : start + chunk]
                for (slot, row, _), (frames, reason) in zip(part, pool.map(reader.load, [p for *_, p in part], chunksize=16)):
                    if frames is None:
                        report.skipped.append({k: row[k] for k in ("path", "participant_id", "sequence_id", "sign")} | {"reason": reason})
                        bad.add(slot)
                        continue
                    data = np.ascontiguousarray(frames, dtype=np.float32)
                    out.write(data.tobytes())
                    miss = _missing_counts(data)
                    rows[slot] = {**row, "offset": end, "length": len(data), "digest": frames_digest(data),
                                  "missing_left": miss[0], "missing_right": miss[1], "missing_both": miss[2]}
                    end += len(data)
                    report.read += 1
                    report.frames_read += len(data)
                checkpoints.reached("ingest:chunk-written")
                if progress:
                    progress(min(start + chunk, len(to_read)), len(to_read))
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:  # disk full, file too large, I/O error: name the file being written
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(target.path)) from None
    return bad


_INDEX_SCHEMA = pa.schema([
    ("sequence_id", pa.int64()), ("participant_id", pa.int64()), ("sign", pa.string()),
    ("label", pa.int32()), ("path", pa.string()), ("offset", pa.int64()), ("length", pa.int32()),
    ("size", pa.int64()), ("mtime_ns", pa.int64()), ("digest", pa.string()),
    ("missing_left", pa.int32()), ("missing_right", pa.int32()), ("missing_both", pa.int32()),
])


def _remove_unreferenced(cache_dir: Path) -> None:
    """Delete frames and index files (and temporary files) that the committed meta.json does not name."""
    try:
        meta = json.loads((cache_dir / META).read_text())
    except (OSError, ValueError):
        return
    keep = {meta.get("frames", V1_FRAMES), meta.get("index", V1_INDEX)}
    for p in cache_dir.iterdir():
        stale_data = (p.name.startswith(("landmarks", "index")) and p.suffix in (".f32", ".parquet", ".tmp"))
        if (stale_data or p.name.startswith(f".{META}.")) and p.name not in keep:
            p.unlink(missing_ok=True)
