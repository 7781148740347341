"""Train the final recipe on every grouped fold, keep each fold's weights, resume what is done.

Layout of the output folder (all written atomically, so an interrupted run leaves whole files):
    recipe.json                 the resolved config, its provenance and the data it was trained on
    folds/fold<k>.pt            {"model": state_dict, "head": state_dict} (torch.load(weights_only=True))
    folds/fold<k>.json          the fold's numbers: accuracy, epochs, seconds, ...
    folds/fold<k>.oof.npz       cache indices and probabilities of the fold's held-out sequences
    folds/fold<k>.seed<s>.*     the same for the fold's extra seeds s = 1 .. N-1 (--seeds-per-fold N),
                                trained with the recipe's seed + s
    full/seed<s>.pt, .json      --full-data: models trained on every sequence (seed recipe seed + s);
                                no held-out sequences, so no out-of-fold estimate
A folder keeps the models it has: a rerun with more seeds trains only the new ones.
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
from ablate.export.ensemble import RULES, combine
from ablate.files import atomic_write
from ablate.parts import Parts, build_parts
from ablate.train import train_fold

RECIPE = "recipe.json"


def _number(path: Path, key: str) -> float:
    """read_json(path)[key] as a number, or a one-line UserError naming the file and key."""
    value = read_json(path).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{path}: {key}: expected a number, got {value!r}; delete it to redo that step")
    return float(value)


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
    seed: int = 0  # which of the fold's seeds (0 .. seeds per fold - 1)


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


def _fold_paths(out: Path, k: int, seed: int = 0) -> tuple[Path, Path, Path]:
    d, stem = out / "folds", f"fold{k}" + (f".seed{seed}" if seed else "")
    return d / f"{stem}.pt", d / f"{stem}.json", d / f"{stem}.oof.npz"


def _members(config: Config, seeds: int) -> list[tuple[int, int]]:
    return [(k, s) for k in range(config.folds) for s in range(seeds)]


def _full_paths(out: Path, seed: int) -> tuple[Path, Path]:
    return out / "full" / f"seed{seed}.pt", out / "full" / f"seed{seed}.json"


def train_full(config: Config, data: Cache, out: Path, seeds: int, log: Any = None) -> list[FoldRecord]:
    """`seeds` models on every sequence (train_fold's fold index config.folds); resumable like train_all.
    Their records carry fold -1 and accuracy NaN: nothing was held out."""
    log = log or sys.stderr
    (out / "full").mkdir(parents=True, exist_ok=True)
    records = []
    for seed in range(seeds):
        weights, summary = _full_paths(out, seed)
        name = f"all the data, seed {seed + 1}/{seeds}"
        if weights.is_file() and summary.is_file():
            records.append(FoldRecord(-1, float("nan"), _number(summary, "seconds"), True, seed))
            print(f"{name}: done before, not retrained", file=log, flush=True)
            continue

        def on_epoch(e: Any, name: str = name) -> None:
            print(f"{name} epoch {e.epoch + 1}/{config.epochs}: loss {e.train_loss:.4f} ({e.seconds:.0f}s)",
                  file=log, flush=True)

        r = train_fold(config.replace(seed=config.seed + seed), data, config.folds, keep_model=True,
                       on_epoch=on_epoch, progress=False)
        assert r.parts is not None
        state = {"model": {n: t.detach().cpu() for n, t in r.parts.model.state_dict().items()},
                 "head": {n: t.detach().cpu() for n, t in r.parts.head.state_dict().items()}}
        atomic_write(weights, _bytes(lambda f: torch.save(state, f)))
        write_json(summary, {"seed": seed, "seconds": r.seconds, "n_train": r.n_train,
                             "train_loss": [e.train_loss for e in r.epochs]})  # last: marks the model done
        records.append(FoldRecord(-1, float("nan"), r.seconds, False, seed))
    return records


def train_all(config: Config, data: Cache, out: Path, log: Any = None, seeds: int = 1) -> list[FoldRecord]:
    """Every fold of config.folds, `seeds` times each; a model whose three files exist is not trained again."""
    log = log or sys.stderr
    (out / "folds").mkdir(parents=True, exist_ok=True)
    records = []
    for k, seed in _members(config, seeds):
        weights, summary, oof = _fold_paths(out, k, seed)
        name = f"fold {k + 1}/{config.folds}" + (f" seed {seed + 1}/{seeds}" if seeds > 1 else "")
        if weights.is_file() and summary.is_file() and oof.is_file():
            records.append(FoldRecord(k, _number(summary, "last_acc"), _number(summary, "seconds"), True, seed))
            print(f"{name}: done before (acc {records[-1].acc:.4f}), not retrained", file=log, flush=True)
            continue

        def on_epoch(e: Any, name: str = name) -> None:
            print(f"{name} epoch {e.epoch + 1}/{config.epochs}: loss {e.train_loss:.4f} "
                  f"val acc {e.val_acc:.4f} ({e.seconds:.0f}s)", file=log, flush=True)

        r = train_fold(config.replace(seed=config.seed + seed), data, k, keep_model=True, keep_predictions=True,
                       on_epoch=on_epoch, progress=False)
        assert r.parts is not None and r.val_indices is not None and r.val_probs is not None
        state = {"model": {n: t.detach().cpu() for n, t in r.parts.model.state_dict().items()},
                 "head": {n: t.detach().cpu() for n, t in r.parts.head.state_dict().items()}}
        atomic_write(weights, _bytes(lambda f: torch.save(state, f)))
        atomic_write(oof, _bytes(lambda f: np.savez(f, indices=r.val_indices, probs=r.val_probs.astype(np.float32))))
        write_json(summary, r.summary())  # last: its presence marks the fold as done
        records.append(FoldRecord(k, r.last_acc, r.seconds, False, seed))
    return records


def _bytes(write: Any) -> bytes:
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


def _load_fold(config: Config, num_classes: int, out: Path, k: int, seed: int = 0) -> Parts:
    """Fold k's model of `seed`; k = -1: the full-data model of `seed`."""
    weights = _fold_paths(out, k, seed)[0] if k >= 0 else _full_paths(out, seed)[0]
    what = (f"fold {k}" if k >= 0 else "the model on all the data") + (f" (seed {seed})" if seed else "")
    if not weights.is_file():
        raise UserError(f"{weights}: missing; run `ablate finalize` to train {what}")
    p = build_parts(config, num_classes)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        p.model.load_state_dict(state["model"])
        p.head.load_state_dict(state["head"])
    except OSError:
        raise
    except Exception as e:  # not a weights file, another recipe's, or damaged: never unpickled unsafely
        problem = "not a PyTorch weights file" if isinstance(e, pickle.UnpicklingError) else \
            f"weights that do not fit this recipe ({type(e).__name__})"
        raise UserError(f"{weights}: {problem}; delete it to train {what} again") from None
    p.model.eval()
    p.head.eval()
    return p


def load_folds(config: Config, num_classes: int, out: Path, seeds: int = 1, full_data: bool = False) -> list[list[Parts]]:
    """Each fold's trained parts (one per seed), in eval mode, on the CPU; with full_data, one
    group: the models trained on all the data."""
    if full_data:
        return [[_load_fold(config, num_classes, out, -1, s) for s in range(seeds)]]
    return [[_load_fold(config, num_classes, out, k, s) for s in range(seeds)] for k in range(config.folds)]


def check_done_folds(config: Config, num_classes: int, out: Path, seeds: int = 1, full_data: bool = False) -> None:
    """The models a rerun will not train again must load: a damaged file is named before any training."""
    members = [(-1, s) for s in range(seeds)] if full_data else _members(config, seeds)
    for k, seed in members:
        files = _full_paths(out, seed) if k < 0 else _fold_paths(out, k, seed)
        if all(f.is_file() for f in files):
            for key in ("seconds",) if k < 0 else ("seconds", "last_acc"):
                _number(files[1], key)
            _load_fold(config, num_classes, out, k, seed)


def out_of_fold(config: Config, data: Cache, out: Path, seeds: int = 1, rule: str = "mean") -> dict[str, Any]:
    """Accuracy of each fold's models (its seeds combined by `rule`) on its held-out participants,
    and pooled over all sequences; with several seeds per fold, also every rule's ("rules").

    The pooled figure predicts every sequence with the models that did not see it: it is the
    out-of-fold estimate for the ensemble (which also combines the other folds' models, and is
    usually a bit better; no labelled data outside the folds is left to measure that directly).
    The rules can only be compared within a fold, where the seeds share their held-out sequences.
    """
    hits = {r: [] for r in RULES}  # rule -> per fold (right, n)
    for k in range(config.folds):
        probs, idx = [], None
        for seed in range(seeds):
            with np.load(_fold_paths(out, k, seed)[2]) as z:
                probs.append(torch.from_numpy(z["probs"]))
                if idx is not None and not np.array_equal(idx, z["indices"]):
                    raise UserError(f"{_fold_paths(out, k, seed)[2]}: holds other sequences than seed 0's; delete it")
                idx = z["indices"]
        for r in RULES:
            pred = combine(torch.stack(probs), r).argmax(1).numpy()
            hits[r].append((int((pred == data.labels[idx]).sum()), int(len(pred))))

    def summary(per: list[tuple[int, int]]) -> dict[str, Any]:
        right, n = sum(h for h, _ in per), sum(m for _, m in per)
        return {"folds": [{"fold": k, "acc": h / m, "n": m} for k, (h, m) in enumerate(per)],
                "pooled": right / n if n else float("nan"), "n": n}

    result = {**summary(hits[rule]), "seeds": seeds, "rule": rule}
    if seeds > 1:
        result["rules"] = {r: summary(hits[r]) for r in RULES}
    return result
