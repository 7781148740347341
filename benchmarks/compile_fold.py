"""Does `compile: true` (torch.compile of the model) pay? One fold of the quick recipe, eager and
compiled, on the same data, in one run; each time includes compiling.

    python benchmarks/compile_fold.py [--epochs 4] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import time

from ablate.data.cache import Cache
from ablate.data.default import default_cache
from ablate.spaces import recipe_config
from ablate.train import train_fold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    data = Cache(default_cache())
    cfg = recipe_config("quick").replace(epochs=a.epochs, device=a.device)
    rows = {}
    for name, compiled in (("eager", False), ("compiled", True), ("eager again", False)):
        t = time.perf_counter()
        r = train_fold(cfg.replace(compile=compiled), data, 0)
        rows[name] = {"seconds": round(time.perf_counter() - t, 1), "samples_per_sec": round(r.samples_per_sec, 1),
                      "last_acc": r.last_acc, "device": r.device}
        print(f"{name:12} {rows[name]['seconds']:7.1f} s  {rows[name]['samples_per_sec']:8.1f} samples/s  "
              f"last acc {r.last_acc:.4f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
