"""Pruning: a tune-mode study with and without Optuna's WilcoxonPruner, on the synthetic data.

    python benchmarks/pruning.py [--trials 12] [--seeds 2] [--epochs 3]

Both studies sample the same space (the loss arms and their parameters) with the same sampler
seed, on the default synthetic set, with folds x seeds >= 6 so the pruner can act. Reported: fold
trainings run, wall time, and the best arm of each study.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from ablate.study import records
from ablate.study.runner import RunArgs, run

SPACE = {
    "question": "benchmark: which loss, tuned?",
    "axis": "loss",
    "mode": "tune",
    "baseline": "subcenter_arcface",
    "arms": {
        "subcenter_arcface": {"ranges": {"margin_rad": [0.1, 0.6], "scale": [16.0, 64.0]}},
        "ce_smooth": {"ranges": {"label_smoothing": [0.0, 0.4]}},
        "focal": {"ranges": {"gamma": [0.5, 4.0]}},
        "adacos": {},
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="ablate-pruning-"))
    try:
        base = yaml.safe_load((repo / "search_spaces" / "base.yaml").read_text())
        base["presets"]["bench"] = {**base["presets"]["quick"], "epochs": a.epochs}
        base["presets"]["bench"].pop("description", None)
        (tmp / "base.yaml").write_text(yaml.safe_dump(base))
        space = dict(SPACE, tune={"n_trials": a.trials})
        (tmp / "bench.yaml").write_text(yaml.safe_dump(space))
        os.environ["ABLATE_SPACES"] = str(tmp)
        rows = []
        for pruning in ("off", "on"):
            t = time.perf_counter()
            study = run(RunArgs("bench", preset="bench", storage=str(tmp / "s.journal"), study=f"bench-{pruning}",
                                seeds=a.seeds, pruning=pruning))
            seconds = time.perf_counter() - t
            recs = records.trial_records(study)
            folds = sum(len(r.folds) for r in recs)
            pruned = sum(r.state == "PRUNED" for r in recs)
            best = max((r for r in recs if r.state == "COMPLETE"), key=lambda r: r.value or 0.0)
            rows.append((pruning, len(recs), pruned, folds, seconds, best.arm, best.value))
        print(f"{'pruning':8} {'trials':>6} {'pruned':>6} {'folds':>6} {'seconds':>8}  best arm (mean acc)")
        for p, n, pr, f, s, arm, v in rows:
            print(f"{p:8} {n:6d} {pr:6d} {f:6d} {s:8.0f}  {arm} ({v:.4f})")
        saved = rows[0][3] - rows[1][3]
        print(f"fold trainings saved by pruning: {saved} of {rows[0][3]} ({100 * saved / rows[0][3]:.0f}%); "
              f"same best arm: {rows[0][5] == rows[1][5]}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
