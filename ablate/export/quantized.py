"""What int8 costs in accuracy: each fold's models converted on their own to TFLite fp32 and int8
(dynamic range) and run on that fold's held-out sequences, so the difference is measured on
sequences no model in the comparison trained on, with the converted models that would ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ablate.config import Config
from ablate.data.cache import Cache
from ablate.export import check, convert
from ablate.export.ensemble import Ensemble

PER_FOLD = 400  # held-out sequences per fold at most (an even sample: each costs a call of both models)


def oof_int8(config: Config, data: Cache, folds: list[list[Any]], rule: str, tta: str, work: Path, log: TextIO,
             per_fold: int = PER_FOLD) -> dict[str, Any]:
    """Accuracy of fp32 and int8 TFLite on each fold's held-out sequences (up to `per_fold`, evenly
    spaced), pooled, with their difference and how often the two predictions differ. The members
    are combined by `rule`, with `tta`, as in the deliverable. Conversion problems raise
    convert.ExportError."""
    fold_of = data.folds(config.folds, config.fold_seed, config.fold_kind)
    hits = {"fp32": 0, "int8": 0}
    n = differ = 0
    for k, parts in enumerate(folds):
        held = np.flatnonzero(fold_of == k)
        held = held[np.linspace(0, len(held) - 1, min(per_fold, len(held))).astype(int)] if len(held) else held
        print(f"export: fold {k}: int8 against fp32 on {len(held)} held-out sequences ...", file=log, flush=True)
        d = work / f"fold{k}"
        d.mkdir(parents=True, exist_ok=True)
        conv_log = d / "convert.log"
        try:
            files = convert.to_tflite_files(Ensemble(parts, tta=tta, rule=rule).eval(), d, list(hits), conv_log)
            models = {p: check.TFLiteModel(path) for p, path in files.items()}
        except ValueError as e:  # no serving signature
            raise convert.ExportError(f"fold {k}: {e}") from e
        for i in held:
            frames = np.asarray(data.sequence(int(i)), dtype=np.float32)
            guess = {p: int(np.argmax(m(frames))) for p, m in models.items()}
            for p, g in guess.items():
                hits[p] += int(g == data.labels[i])
            differ += int(guess["fp32"] != guess["int8"])
            n += 1
    acc = {p: h / max(n, 1) for p, h in hits.items()}
    return {"sequences": n, "per_fold": per_fold, "accuracy_fp32": acc["fp32"], "accuracy_int8": acc["int8"],
            "difference": acc["int8"] - acc["fp32"], "predictions_differ": differ}
