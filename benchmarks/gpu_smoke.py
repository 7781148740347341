"""The training paths that only run on CUDA, run once on a GPU (CI has none): the multi-tensor
Ranger (also as SAM's base), the pretraining head's restart, and training batches made
GROUP_ITEMS at a time with a length-changing augmentation, on a small synthetic cache.

    python benchmarks/gpu_smoke.py [--cache DIR]

Prints, per optimizer, the device, precision, optimizer class, losses and accuracies of each
epoch; exits non-zero if a loss is not finite. On a CPU it runs the CPU paths (minutes).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ablate.components.optimizers import OPTIMIZERS
from ablate.config import Component
from ablate.data.cache import Cache
from ablate.data.synth import SynthConfig
from ablate.data.synth_cache import synth_cache
from ablate.device import resolve_device
from ablate.spaces import recipe_config
from ablate.train import train_fold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/ablate_gpu_smoke")
    a = ap.parse_args()
    try:
        data = Cache(Path(a.cache))
    except Exception:  # not built yet (or damaged): build it
        synth_cache(Path(a.cache), SynthConfig(n_signs=20, n_participants=5, reps=6))
        data = Cache(Path(a.cache))
    augs = (Component("speed", {"p": 0.5}), Component("shift", {}), Component("scale", {}), Component("hflip", {}))
    base = recipe_config("quick").replace(epochs=4, pretrain_ce=0.5, augmentations=augs, early_stopping=0)
    device = resolve_device(base.device)
    kind = type(OPTIMIZERS.build("ranger", {}, weights=[torch.nn.Parameter(torch.ones(3, device=device))]))
    ok = True
    for opt in (Component("ranger", {"lr": 3e-3}), Component("sam", {"base": "ranger", "lr": 3e-3})):
        r = train_fold(base.replace(optimizer=opt), data, 0, progress=False)
        losses = [e.train_loss for e in r.epochs]
        ok &= all(math.isfinite(x) for x in losses)
        print(json.dumps({"optimizer": opt.name, "device": r.device, "gpu": r.gpu, "amp": r.amp,
                          "ranger_class": f"{kind.__module__}.{kind.__name__}",
                          "train_loss": [round(x, 4) for x in losses], "val_acc": [round(e.val_acc, 4) for e in r.epochs]}))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
