"""The landmark cache: a ragged on-disk layout that the full data set never has to fit in RAM.

A cache directory holds
    meta.json                 the commit point: version, source, sign map, fingerprint, skipped
                              files, and the names of the frames and index files below
    landmarks-<gen>.f32       all frames of all sequences, float32 [n_frames, 543, 3], memory-mapped
    index-<gen>.parquet       one row per sequence: ids, sign, label, frame offset and length, the
                              source file's size and mtime, and a digest of the frames as written
    folds.json                fold assignments, keyed by kind/k/seed, valid for one fingerprint

`meta.json` names the files it belongs to and is replaced atomically, last: an ingest writes new
frames and a new index beside the current ones (ablate.data.ingest), so whatever kills it, the
files the current meta.json names are never written. Version 1 caches (landmarks.f32,
index.parquet, no file names in meta.json) are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.data import kaggle
from ablate.data.folds import GROUPED, fold_key, make_folds
from ablate.data.landmarks import N_LANDMARKS
from ablate.errors import UserError, first_line
from ablate.files import atomic_write

CACHE_VERSION = 2
READABLE_VERSIONS = (1, 2)
META = "meta.json"
FOLDS = "folds.json"
V1_FRAMES, V1_INDEX = "landmarks.f32", "index.parquet"  # the names before generations
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
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: not a directory (expected an ablate cache or a Kaggle asl-signs data directory)")
    if (path / META).is_file():
        return path
    if (path / kaggle.TRAIN_CSV).is_file():
        return default_cache_dir(path)
    return path


def frames_digest(frames: np.ndarray) -> str:
    """The digest stored per sequence: of the float32 bytes exactly as the cache holds them."""
    return hashlib.blake2b(np.ascontiguousarray(frames, dtype=np.float32).tobytes(), digest_size=8).hexdigest()


def fingerprint(rows: list[dict[str, Any]], sign_map: dict[str, int]) -> str:
    """Content hash: sign map plus every sequence's id, participant, label and frame digest."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(sign_map, sort_keys=True).encode())
    for r in sorted(rows, key=lambda r: r["sequence_id"]):
        h.update(f"{r['sequence_id']},{r['participant_id']},{r['label']},{r['digest']};".encode())
    return h.hexdigest()


def _damaged(path: Path, why: str, meta: dict[str, Any] | None = None) -> UserError:
    source = (meta or {}).get("source")
    fix = f"ablate data ingest {source} --cache {path.parent} --rebuild" if source else "ablate data ingest DIR --rebuild"
    return UserError(f"{path}: {why}; the cache is damaged, rebuild it with `{fix}`")


def read_committed(cache_dir: Path) -> tuple[dict[str, Any], pa.Table, Path]:
    """The committed state of a cache: (meta, index table, frames file). A UserError names the
    file at fault for anything missing, unreadable or inconsistent."""
    path = cache_dir / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{cache_dir}: no ablate cache here (run `ablate data ingest DIR` first)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _damaged(path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not {"version", "fingerprint", "sign_map", "source"} <= set(meta):
        raise _damaged(path, "missing fields (expected version, source, fingerprint, sign_map)")
    names = [meta.get(k) for k in ("frames", "index") if k in meta]
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names) \
            or not isinstance(meta["sign_map"], dict) or not isinstance(meta["fingerprint"], str):
        raise _damaged(path, "fields of the wrong type (frames and index must name files of the cache)", meta)
    if meta["version"] not in READABLE_VERSIONS:
        raise UserError(f"{path}: cache version {meta['version']!r}, this ablate reads {READABLE_VERSIONS}; "
                        "re-run ingest with --rebuild")
    index_path = cache_dir / meta.get("index", V1_INDEX)
    try:
        index = pq.read_table(index_path)
    except FileNotFoundError:
        raise _damaged(index_path, "missing", meta) from None
    except (pa.ArrowException, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise _damaged(index_path, f"not a readable parquet index ({first_line(e, 120)})", meta) from None
    needed = {"sequence_id", "participant_id", "label", "offset", "length", "digest", "path"}
    if not needed <= set(index.column_names) or index.num_rows == 0:
        raise _damaged(index_path, "missing columns or rows", meta)
    frames = cache_dir / meta.get("frames", V1_FRAMES)
    end = int(max(o + n for o, n in zip(index.column("offset").to_pylist(), index.column("length").to_pylist())))
    try:
        size = frames.stat().st_size
    except FileNotFoundError:
        raise _damaged(frames, "missing (the frames file of this cache)", meta) from None
    if size < end * FRAME_BYTES:
        raise _damaged(frames, f"truncated: {size} bytes, the index needs {end * FRAME_BYTES}", meta)
    return meta, index, frames


class Cache:
    """Read access to an ingested cache: sequences as memory-mapped views, labels, folds."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir = resolve_cache_dir(Path(cache_dir))
        self.meta, index, self.frames_file = read_committed(cache_dir)
        self.dir = cache_dir
        cols = {c: index.column(c).to_numpy() for c in ("sequence_id", "participant_id", "label", "offset", "length")}
        self.sequence_ids: np.ndarray = cols["sequence_id"]
        self.participants: np.ndarray = cols["participant_id"]
        self.labels: np.ndarray = cols["label"].astype(np.int64)
        self.offsets: np.ndarray = cols["offset"]
        self.lengths: np.ndarray = cols["length"].astype(np.int64)
        self.index = index
        total = int((self.offsets + self.lengths).max())
        self._frames = np.memmap(self.frames_file, dtype=np.float32, mode="r", shape=(total, N_LANDMARKS, 3))

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
        stored = stored if isinstance(stored, dict) else {}
        entry = stored.get(key)
        if isinstance(entry, dict) and entry.get("fingerprint") == self.fingerprint and len(entry.get("fold", ())) == len(self):
            return np.asarray(entry["fold"], dtype=np.int8)
        fold = make_folds(self.labels, self.participants, k, seed, kind)
        stored = {k2: v for k2, v in stored.items() if isinstance(v, dict) and v.get("fingerprint") == self.fingerprint}
        stored[key] = {"fingerprint": self.fingerprint, "kind": kind, "k": k, "seed": seed, "fold": fold.tolist()}
        try:
            atomic_write(path, json.dumps(stored).encode())
        except OSError:
            pass  # a read-only cache (shared data, a read-only mount): recomputed, identically, next time
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
            "skipped": len(self.meta.get("skipped", [])),
        }
