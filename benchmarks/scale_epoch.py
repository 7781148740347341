"""One training epoch on a full-size data set: time and peak memory.

    ablate data synth --out DIR --signs 250 --participants 21 --reps 18 --cache-only --workers N
    python benchmarks/scale_epoch.py --data DIR [--preset quick] [--epochs 1]

Trains fold 0 of the cache (4/5 of it) for --epochs epochs of the preset's recipe and prints the
time to build the resident landmarks, the time of each epoch (training and validation), the
training rate, and the peak resident memory of the process (ru_maxrss), which must stay near the
resident landmarks' size (nothing else scales with the data set). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from ablate.data.cache import Cache
from ablate.data.resident import store_for
from ablate.device import resolve_device
from ablate.parts import build_parts
from ablate.spaces import recipe_config
from ablate.train import train_fold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a cache")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--epochs", type=int, default=1)
    a = ap.parse_args()
    data = Cache(a.data)
    cfg = recipe_config(a.preset).replace(epochs=a.epochs, early_stopping=0)
    device = resolve_device(cfg.device)
    t = time.perf_counter()
    store = store_for(data, build_parts(cfg, data.num_classes).features.layout(), device)
    built = time.perf_counter() - t
    r = train_fold(cfg, data, 0, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    out = {"sequences": len(data), "frames": int(data.lengths.sum()), "train_sequences": r.n_train,
           "device": r.device, "store_seconds": round(built, 1), "store_gib": round(store.bytes / 2**30, 2),
           "epoch_seconds": [round(e.seconds, 1) for e in r.epochs],
           "train_rate": [round(e.train_rate, 1) for e in r.epochs], "peak_rss_gib": round(peak, 2),
           "val_acc": [round(e.val_acc, 4) for e in r.epochs]}
    print(f"{len(data)} sequences ({out['frames']} frames); landmarks {out['store_gib']} GiB built in {built:.0f}s; "
          f"epochs {out['epoch_seconds']} s at {out['train_rate']} training sequences/s; peak RSS {peak:.2f} GiB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
