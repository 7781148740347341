"""Ingest throughput versus the competition's per-file pandas loader, on the same files, in one run.

    python benchmarks/ingest_throughput.py [--data DIR] [--signs 40 --participants 21 --reps 6]

Without --data it generates a synthetic set in the Kaggle layout under benchmarks/out/. Both sides
read every file listed in train.csv with a warm page cache; the reference is
`load_relevant_data_subset` (pandas, one file after another, as in the competition's notebook);
ours is `ablate data ingest` from scratch (parallel pyarrow reads + writing the cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from ablate.data.cache import Cache
from ablate.data.ingest import ingest
from ablate.data.kaggle import load_relevant_data_subset
from ablate.data.synth import SynthConfig, generate

FULL_SEQUENCES = 94_477


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="existing Kaggle-layout directory (default: generate one)")
    ap.add_argument("--signs", type=int, default=40)
    ap.add_argument("--participants", type=int, default=21)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    data = a.data
    if data is None:
        data = Path(__file__).parent / "out" / f"synth-{a.signs}x{a.participants}x{a.reps}"
        if not (data / "train.csv").is_file():
            print(f"generating {data} ...", flush=True)
            generate(data, SynthConfig(n_signs=a.signs, n_participants=a.participants, reps=a.reps, seed=123),
                     workers=a.workers)
    paths = [data / p for p in pacsv.read_csv(data / "train.csv").column("path").to_pylist()]
    for p in paths:  # warm the page cache for both contestants
        p.read_bytes()

    t = time.perf_counter()
    frames_ref = sum(len(load_relevant_data_subset(p)) for p in paths)
    t_ref = time.perf_counter() - t

    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    try:
        t = time.perf_counter()
        report = ingest(data, tmp / "cache", workers=a.workers)
        t_ours = time.perf_counter() - t
        cache = Cache(tmp / "cache")
        assert report.frames_read == frames_ref and len(cache) == len(paths)
        t = time.perf_counter()
        noop = ingest(data, tmp / "cache", workers=a.workers)
        t_noop = time.perf_counter() - t
        assert not noop.changed
    finally:
        shutil.rmtree(tmp)

    n = len(paths)
    lengths = cache.lengths
    print(f"files: {n} sequences, {frames_ref} frames (median {np.median(lengths):g}, mean {lengths.mean():.1f}, "
          f"max {lengths.max()}); cores: {os.cpu_count()}; workers: {a.workers}")
    print(f"competition loader (pandas, per file): {t_ref:7.2f} s  {n / t_ref:8.1f} seq/s")
    print(f"ablate data ingest (from scratch):     {t_ours:7.2f} s  {n / t_ours:8.1f} seq/s")
    print(f"speed-up: {t_ref / t_ours:.1f}x   re-run (no-op): {t_noop:.2f} s")
    print(f"projected ingest of {FULL_SEQUENCES} sequences at this length distribution: "
          f"{FULL_SEQUENCES / (n / t_ours) / 60:.1f} min (reference loader: {FULL_SEQUENCES / (n / t_ref) / 60:.1f} min)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
