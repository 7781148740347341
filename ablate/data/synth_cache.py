"""`ablate data synth --cache-only`: a synthetic data set written straight into a landmark cache,
without the Kaggle layout's parquet files (about 6.5 KB per frame saved twice over, and the
parquet round trip), for scale tests: the full competition size is 94k sequences.

The cache is the one `ablate data ingest` would build from the files of `ablate data synth` with
the same configuration: the same frames, labels and participants, sequence for sequence (a test
holds them equal). Its source is recorded as `synthetic:` plus the configuration, so `verify`
knows there are no files to compare with.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ablate.data.ingest import IngestReport, Reader, _check_cache_dir, _commit, _locked, _remove_unreferenced, _Target
from ablate.data.synth import SynthConfig, plan, signs, synthesize

SOURCE_PREFIX = "synthetic:"


def _one(task: tuple[SynthConfig, int, int, int]) -> tuple[np.ndarray | None, str]:
    return synthesize(*task), ""


def synth_cache(cache_dir: Path, cfg: SynthConfig, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Generate `cfg`'s sequences into a new cache at cache_dir (replacing what was there, only
    once the new one is committed)."""
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir)
    _check_cache_dir(cache_dir, flag="--out")
    sign_map = {name: i for i, name in enumerate(signs(cfg))}
    rows = plan(cfg)
    to_read = [(i, {"path": r.path, "participant_id": r.participant_id, "sequence_id": r.sequence_id, "sign": r.sign,
                    "label": sign_map[r.sign], "size": 0, "mtime_ns": 0}, (cfg, r.p, r.sign_index, r.rep))
               for i, r in enumerate(rows)]
    slots: list[dict] = [{} for _ in rows]
    report = IngestReport(cache_dir=cache_dir, total=len(rows))
    source = SOURCE_PREFIX + json.dumps(asdict(cfg), sort_keys=True)
    pool = partial(ProcessPoolExecutor, mp_context=get_context("spawn"))  # synthesis holds the GIL
    with _locked(cache_dir):
        target = _Target(cache_dir / f"landmarks-{secrets.token_hex(4)}.f32", 0, True)
        _commit(cache_dir, source, sign_map, slots, to_read, target, report, None, Reader(_one, pool, workers), progress)
        _remove_unreferenced(cache_dir)
    report.seconds = time.perf_counter() - t0
    return report
