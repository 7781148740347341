"""Train the final recipe on every grouped fold, keep each fold's weights, resume what is done.

Layout of the output folder (all written atomically, so an interrupted run leaves whole files):
    recipe.json                 the resolved config, its provenance and the data it was trained on
    folds/fold<k>.pt            {"model": state_dict, "head": state_dict} (torch.load(weights_only=True))
    folds/fold<k>.json          the fold's numbers: accuracy, epochs, seconds, ...
    folds/fold<k>.oof.npz       cache indices and probabilities of the fold's held-out sequences
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate.config import ADDED_KEYS, Config
from ablate.data.cache import Cache
from ablate.errors import UserError
from ablate.files import atomic_write
from ablate.parts import Parts, build_parts
from ablate.train import train_fold

RECIPE = "recipe.json"


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); delete it to redo that step") from None
    if not isinstance(out, dict):
        raise UserError(f"{path}: expected a JSON object; delete it to redo that step")
    return out


@dataclass
class FoldRecord:
    fold: int
    acc: float  # last-epoch accuracy on the held-out participants
    seconds: float
    resumed: bool


def check_or_claim(out: Path, config: Config, data: Cache, extra: dict[str, Any]) -> None:
    """Write recipe.json, or check that the folder's earlier run had the same config and data (then
    it stays as it is: the provenance of the folds is that of the run that trained them)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected a folder for the final model")
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECIPE
    # through JSON, as the stored copy went: tuples become lists, so equal configs compare equal
    mine = {"config": json.loads(json.dumps(config.to_dict())), "data": {"fingerprint": data.fingerprint, "cache": str(data.dir),
                                                 "sequences": len(data), "sign_map": data.sign_map}}
    if path.is_file():
        theirs = read_json(path)
        stored = {**ADDED_KEYS, **theirs.get("config", {})}  # a folder from before a key existed: its neutral value
        diff = [k for k in mine["config"] if stored.get(k) != mine["config"][k]]
        if diff or theirs.get("data", {}).get("fingerprint") != data.fingerprint:
            what = f"config differs in {', '.join(diff)}" if diff else "trained on other data"
            raise UserError(f"{out}: holds folds of another run ({what}); pass another --out, or delete {out}")
        return
    write_json(path, {**mine, **extra})


def _fold_paths(out: Path, k: int) -> tuple[Path, Path, Path]:
    d = out / "folds"
    return d / f"fold{k}.pt", d / f"fold{k}.json", d / f"fold{k}.oof.npz"


def train_all(config: Config, data: Cache, out: Path, log: Any = None) -> list[FoldRecord]:
    """Every fold of config.folds; a fold whose three files exist is not trained again."""
    log = log or sys.stderr
    (out / "folds").mkdir(parents=True, exist_ok=True)
    records = []
    for k in range(config.folds):
        weights, summary, oof = _fold_paths(out, k)
        if weights.is_file() and summary.is_file() and oof.is_file():
            s = read_json(summary)
            records.append(FoldRecord(k, float(s["last_acc"]), float(s["seconds"]), True))
            print(f"fold {k + 1}/{config.folds}: done before (acc {s['last_acc']:.4f}), not retrained", file=log, flush=True)
            continue

        def on_epoch(e: Any, k: int = k) -> None:
            print(f"fold {k + 1}/{config.folds} epoch {e.epoch + 1}/{config.epochs}: loss {e.train_loss:.4f} "
                  f"val acc {e.val_acc:.4f} ({e.seconds:.0f}s)", file=log, flush=True)

        r = train_fold(config, data, k, keep_model=True, keep_predictions=True, on_epoch=on_epoch, progress=False)
        assert r.parts is not None and r.val_indices is not None and r.val_probs is not None
        state = {"model": {n: t.detach().cpu() for n, t in r.parts.model.state_dict().items()},
                 "head": {n: t.detach().cpu() for n, t in r.parts.head.state_dict().items()}}
        atomic_write(weights, _bytes(lambda f: torch.save(state, f)))
        atomic_write(oof, _bytes(lambda f: np.savez(f, indices=r.val_indices, probs=r.val_probs.astype(np.float32))))
        write_json(summary, r.summary())  # last: its presence marks the fold as done
        records.append(FoldRecord(k, r.last_acc, r.seconds, False))
    return records


def _bytes(write: Any) -> bytes:
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


def _load_fold(config: Config, num_classes: int, out: Path, k: int) -> Parts:
    weights = _fold_paths(out, k)[0]
    if not weights.is_file():
        raise UserError(f"{weights}: missing; run `ablate finalize` to train fold {k}")
    p = build_parts(config, num_classes)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        p.model.load_state_dict(state["model"])
        p.head.load_state_dict(state["head"])
    except OSError:
        raise
    except Exception as e:  # not a weights file, another recipe's, or damaged: never unpickled unsafely
        what = "not a PyTorch weights file" if isinstance(e, pickle.UnpicklingError) else \
            f"weights that do not fit this recipe ({type(e).__name__})"
        raise UserError(f"{weights}: {what}; delete it to train fold {k} again") from None
    p.model.eval()
    p.head.eval()
    return p


def load_folds(config: Config, num_classes: int, out: Path) -> list[Parts]:
    """Each fold's trained parts, in eval mode, on the CPU."""
    return [_load_fold(config, num_classes, out, k) for k in range(config.folds)]


def check_done_folds(config: Config, num_classes: int, out: Path) -> None:
    """The folds a rerun will not train again must load: a damaged file is named before any training."""
    for k in range(config.folds):
        weights, summary, oof = _fold_paths(out, k)
        if weights.is_file() and summary.is_file() and oof.is_file():
            read_json(summary)
            _load_fold(config, num_classes, out, k)


def out_of_fold(config: Config, data: Cache, out: Path) -> dict[str, Any]:
    """Accuracy of each fold model on its held-out participants, and pooled over all sequences.

    The pooled figure predicts every sequence with the one model that did not see it: it is the
    out-of-fold estimate for the ensemble (which averages five such models, and is usually a bit
    better; no labelled data outside the folds is left to measure that directly).
    """
    per_fold, hits, n = [], 0, 0
    for k in range(config.folds):
        with np.load(_fold_paths(out, k)[2]) as z:
            pred, idx = z["probs"].argmax(1), z["indices"]
        right = int((pred == data.labels[idx]).sum())
        per_fold.append({"fold": k, "acc": right / len(pred), "n": int(len(pred))})
        hits, n = hits + right, n + len(pred)
    return {"folds": per_fold, "pooled": hits / n if n else float("nan"), "n": n}
