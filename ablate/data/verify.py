"""`ablate data verify`: does the cache hold what it says, and do the source files still match it?

Two checks per sequence:
- the cache: the frames it holds against the digest stored when they were written (a damaged or
  overwritten frames file shows here);
- the source: the landmark file read again, against the same digest (a file changed since the
  ingest shows here, even when its size and modification time did not change).
Rows of train.csv that the cache does not hold, and cached rows train.csv no longer lists, are
named too. The source checks are skipped when the source directory is gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ablate.data import kaggle
from ablate.data.cache import Cache, frames_digest
from ablate.errors import UserError


@dataclass
class VerifyReport:
    cache_dir: Path
    source: str
    checked: int = 0
    source_checked: bool = True
    skipped: int = 0  # rows of train.csv the ingest skipped, with its reasons (not mismatches)
    mismatches: list[str] = field(default_factory=list)


def _source_digest(path: Path) -> tuple[str | None, str]:
    try:
        return frames_digest(kaggle.read_landmarks(path)), ""
    except kaggle.BadFile as e:
        return None, str(e)
    except OSError as e:
        return None, f"cannot read ({e.strerror or e})"


def verify(cache_dir: Path, workers: int | None = None,
           progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check every sequence of a cache; the report lists each mismatch in one line."""
    cache = Cache(cache_dir)
    source = Path(cache.meta["source"])
    report = VerifyReport(cache.dir, str(source))
    rows = cache.index.select(["path", "sequence_id", "digest"]).to_pylist()
    for i, r in enumerate(rows):
        if frames_digest(cache.sequence(i)) != r["digest"]:
            report.mismatches.append(f"cache: sequence {r['sequence_id']} ({r['path']}): the frames stored in "
                                     f"{cache.frames_file.name} differ from the digest written with them")
    report.checked = len(rows)
    from ablate.data.synth_cache import SOURCE_PREFIX  # a cache written straight from the generator: no files

    if str(source).startswith(SOURCE_PREFIX) or not (source / kaggle.TRAIN_CSV).is_file():
        report.source_checked = False
        return report
    try:
        listed = kaggle.read_train_csv(source).to_pydict()
    except UserError as e:
        report.mismatches.append(f"source: {e}")
        return report
    cached = {r["path"]: r for r in cache.index.select(["path", "sequence_id", "participant_id", "sign"]).to_pylist()}
    skipped = {s["path"]: s["reason"] for s in cache.meta.get("skipped", [])}
    report.skipped = len(skipped)
    for rel, pid, sid, sign in zip(listed["path"], listed["participant_id"], listed["sequence_id"], listed["sign"]):
        row = cached.get(rel)
        if row is None and rel not in skipped:
            report.mismatches.append(f"source: {rel} (sequence {sid}) is listed in train.csv but not in the cache "
                                     "(added since the ingest: run `ablate data ingest`)")
        elif row is not None and (row["sequence_id"], row["participant_id"], row["sign"]) != (sid, pid, sign):
            report.mismatches.append(f"source: {rel}: train.csv now says sequence {sid}, participant {pid}, sign "
                                     f"{sign!r}; the cache has {row['sequence_id']}, {row['participant_id']}, "
                                     f"{row['sign']!r} (run `ablate data ingest`)")
    gone = set(cached) - set(listed["path"])
    report.mismatches += [f"source: {p} is in the cache but no longer listed in train.csv" for p in sorted(gone)]
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for n, (r, (digest, why)) in enumerate(zip(rows, pool.map(_source_digest, [source / r["path"] for r in rows]))):
            if digest is None:
                report.mismatches.append(f"source: {r['path']}: {why}")
            elif digest != r["digest"]:
                report.mismatches.append(f"source: {r['path']} changed since it was ingested (run `ablate data ingest`)")
            if progress and (n + 1) % 256 == 0:
                progress(n + 1, len(rows))
    return report
