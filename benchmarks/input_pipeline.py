"""Input preparation: the old per-sequence path against the batched path, same sequences.

    python benchmarks/input_pipeline.py [--batches 40] [--batch-size 32] [--repeat 3]

Both prepare the same training batches (length-bucketed, batch 32, of the default synthetic set)
with the baseline augmentations (shift, scale, rotate, hflip, p = 0.5 each) and seed828 features,
ending with the padded feature tensor [B, T, 828] and the mask that the model takes:
- per_sequence: numpy augmentations on all 543 landmarks of one sequence, the feature module on
  it, then padding (benchmarks/_per_sequence.py, the path train_fold used before);
- batched: the carried landmarks gathered from the resident store, augmented and featurised as
  whole batches (what train_fold does now). The store is built once per process, not timed here
  (its build time is printed).
Best of --repeat runs each, in one process on this machine's threads. The last line is JSON:
{"per_sequence": seq/s, "batched": seq/s, "ratio": batched / per_sequence}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _per_sequence as old  # noqa: E402

from ablate.batching import BucketBatchSampler  # noqa: E402
from ablate.components import FEATURES  # noqa: E402
from ablate.components.augmentations import compose  # noqa: E402
from ablate.data.cache import Cache  # noqa: E402
from ablate.data.default import default_cache  # noqa: E402
from ablate.data.resident import store_for  # noqa: E402

BASELINE = ["shift", "scale", "rotate", "hflip"]


def per_sequence(data: Cache, batches: list[np.ndarray], features: torch.nn.Module) -> float:
    t = time.perf_counter()
    for b in batches:
        items = [old.item(data.sequence(int(i)), features, np.random.default_rng([0, 0, int(i)])) for i in b]
        old.pad_collate(items)
    return sum(map(len, batches)) / (time.perf_counter() - t)


def batched(data: Cache, batches: list[np.ndarray], features: torch.nn.Module, device: torch.device) -> float:
    store = store_for(data, features.layout(), device)
    pipeline = compose([(name, {"p": 0.5}) for name in BASELINE])
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches:
        raw, _ = store.batch(b, (0, 0, 0, 0))
        with torch.no_grad():
            features.batched(pipeline(raw))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(map(len, batches)) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    data = Cache(default_cache())
    features = FEATURES.build("seed828", {})
    sampler = BucketBatchSampler(data.lengths, a.batch_size, shuffle=True, seed=0)
    batches = sampler.batches()[: a.batches]
    t = time.perf_counter()
    store_for(data, features.layout(), device)
    built = time.perf_counter() - t
    dev_features = features.to(device)
    slow = max(per_sequence(data, batches, features.cpu()) for _ in range(a.repeat))
    fast = max(batched(data, batches, dev_features.to(device), device) for _ in range(a.repeat))
    frames = int(sum(data.lengths[b].sum() for b in batches))
    print(f"{sum(map(len, batches))} sequences ({frames} frames) in {len(batches)} batches of {a.batch_size}; "
          f"{torch.get_num_threads()} threads; store built in {built:.2f}s for {len(data)} sequences")
    print(f"per-sequence path: {slow:9.1f} sequences/s")
    print(f"batched path ({device.type}): {fast:9.1f} sequences/s")
    print(f"ratio: {fast / slow:.1f}x")
    print(json.dumps({"per_sequence": round(slow, 1), "batched": round(fast, 1), "ratio": round(fast / slow, 2)}))


if __name__ == "__main__":
    main()
