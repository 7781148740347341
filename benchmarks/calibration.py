"""Is the verdict rule calibrated? False calls on null comparisons of real learners, and power.

A null comparison: two arms that are the same learner, differing only in their random numbers
(as a `seed_offset` arm of a search space differs from the baseline), so neither is better in
truth. The learner is real and cheap: the proxy features of benchmarks/synth_effects.py (hands and
arms resampled to 16 frames, normalised by the shoulders), standardised on the training folds, a
Gaussian random projection to 32 dimensions and a ridge classifier fitted on a random 80% of the
training sequences; its random numbers (projection, subsample) come from ablate's own run seed of
(seed, fold seed, fold), as a training run's do. Data: synthetic sets of the default size (12
signs x 10 participants x 6), one per generator seed, participant-grouped folds from ablate's own
partitioner, a fresh partition for every comparison (and for every repeat within one).

Each null comparison runs every design (5 folds x 1 seed, 5 x 2 seeds, 3 repeats x 5 folds, and
5 x 1 with the seeds shared by all folds as before the verdicts issue) and is judged by ablate's
rule (`ablate.report.verdicts.units_of`, `ablate.report.stats.posterior` and `decide`): the
default ROPE +-0.005 and a zero-width one (pure significance: the most false calls the rule can
make). A false call is "better" or "worse"; the interval is Clopper-Pearson at 95%.

Power: a difference of 1 and 2 standard deviations of a unit difference (the median over the null
comparisons of that design) added to the arm's unit scores of every null comparison: the share
called "better".

The participant panel's group test on the same nulls: the permutation p of "the arms' difference
differs between the generator's left- and right-handed participants" (3 of 10; every one of the
120 relabellings), the share at or below 0.05 (the panel divides 0.05 by the number of
attributes; this is the rate of one test).

Run: python benchmarks/calibration.py [--comparisons 1000 --datasets 2 --jobs 2]
The last line of output is a JSON object with one entry per design.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread per job: BLAS threads fight over 2 cores
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.components._random import run_seed  # noqa: E402
from ablate.data.folds import make_folds  # noqa: E402
from ablate.data.synth import SynthConfig, left_handed, plan, synthesize  # noqa: E402
from ablate.report.participants import permutation_p  # noqa: E402
from ablate.report.stats import DEFAULT_ROPE, decide, posterior  # noqa: E402
from ablate.report.verdicts import Design, units_of  # noqa: E402
from synth_effects import features  # noqa: E402

K = 5
DIM = 32  # random projection
SUBSAMPLE = 0.8  # of the training sequences, per fit
RIDGE = 1.0
ARM_OFFSET = 500  # the second arm's seed offset (as a seed_offset arm)
DESIGNS = {  # name -> (repeats, seeds, folds shared-seed?)
    "5x1": (1, 1, False),
    "5x2 seeds": (1, 2, False),
    "3 repeats x 5": (3, 1, False),
    "5x1, seeds shared by folds (before)": (1, 1, True),
}
ZERO_ROPE = (0.0, 1e-12)


def dataset(seed: int) -> tuple[np.ndarray, ...]:
    """(features, labels, participants, left-handed per participant index) of a default-size
    synthetic set, made in memory."""
    cfg = SynthConfig(seed=seed)
    rows = plan(cfg)
    x = np.stack([features(synthesize(cfg, r.p, r.sign_index, r.rep), use_z=False) for r in rows])
    pids = np.array([r.participant_id for r in rows])
    lefty = set(left_handed(cfg))
    return x, np.array([r.sign_index for r in rows]), pids, np.array([p in lefty for p in np.unique(pids)])


def fit_score(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """Correctness on each `test` sequence of the seeded learner fitted on (a random part of) `train`."""
    rng = np.random.default_rng(seed)
    part = train[rng.random(train.size) < SUBSAMPLE]
    mu, sd = x[part].mean(0), x[part].std(0) + 1e-6
    proj = rng.normal(0.0, 1.0 / np.sqrt(x.shape[1]), (x.shape[1], DIM))
    z_tr = np.c_[((x[part] - mu) / sd) @ proj, np.ones(part.size)]
    z_te = np.c_[((x[test] - mu) / sd) @ proj, np.ones(test.size)]
    classes = np.unique(y)
    onehot = (y[part, None] == classes[None, :]).astype(np.float64)
    w = np.linalg.solve(z_tr.T @ z_tr + RIDGE * np.eye(DIM + 1), z_tr.T @ onehot)
    return classes[(z_te @ w).argmax(1)] == y[test]


def arm_scores(data: tuple[np.ndarray, ...], seed: int, fold_seed: int, design: tuple[int, int, bool]) -> tuple[
        list[float], float, np.ndarray]:
    """Slot scores ((repeat * seeds + s) * K + fold) of one arm, the mean n_test / n_train, and each
    sequence's correctness averaged over its repeats and seeds."""
    x, y, groups = data[:3]
    repeats, seeds, shared = design
    out, rho, correct = [], [], np.zeros(y.size)
    for r in range(repeats):
        fold = make_folds(y, groups, K, fold_seed + r)
        for s in range(seeds):
            for k in range(K):
                train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
                key = run_seed(seed + s, 0, 0) if shared else run_seed(seed + s, fold_seed + r, k)
                ok = fit_score(x, y, train, test, key)
                out.append(float(ok.mean()))
                correct[test] += ok / (repeats * seeds)
                rho.append(test.size / train.size)
    return out, float(np.mean(rho)), correct


def group_null_p(data: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray) -> float:
    """The participant panel's permutation p for "the arms' difference differs between the
    generator's left- and right-handed participants" (true nulls here: the arms are the same)."""
    groups, lefty = data[2], data[3]
    ids = np.unique(groups)
    diff = np.array([(b - a)[groups == p].mean() for p in ids])
    return permutation_p(diff, lefty, np.random.default_rng(0))[0]


def one_comparison(data: tuple[np.ndarray, ...], c: int) -> dict[str, Any]:
    """Every design on null comparison c: its unit differences, rho, both verdicts and the group test."""
    out: dict[str, Any] = {}
    for name, design in DESIGNS.items():
        fold_seed = 1000 + 16 * c  # a fresh partition per comparison, the repeats after it
        a, rho, ca = arm_scores(data, 10_000 * c, fold_seed, design)
        b, _, cb = arm_scores(data, 10_000 * c + ARM_OFFSET, fold_seed, design)
        shape = Design(design[0], design[1], K)
        d = units_of(b, shape) - units_of(a, shape)
        out[name] = {"d": d.tolist(), "rho": rho, "mean_acc": float(np.mean(a)),
                     "rope": decide(posterior(d, rho, DEFAULT_ROPE)), "zero": decide(posterior(d, rho, ZERO_ROPE)),
                     "group_p": group_null_p(data, ca, cb)}
    return out


def rate(hits: int, n: int) -> tuple[float, float, float]:
    """Share and its Clopper-Pearson 95% interval."""
    low = stats.beta.ppf(0.025, hits, n - hits + 1) if hits else 0.0
    high = stats.beta.ppf(0.975, hits + 1, n - hits) if hits < n else 1.0
    return hits / n, float(low), float(high)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in DESIGNS:
        rows = [r[name] for r in results]
        n = len(rows)
        sd = float(np.median([np.std(r["d"], ddof=1) for r in rows]))
        entry: dict[str, Any] = {"nulls": n, "sd_unit_diff": sd, "mean_acc": float(np.mean([r["mean_acc"] for r in rows]))}
        for rule in ("rope", "zero"):
            calls = [r[rule] for r in rows]
            false = sum(v in ("better", "worse") for v in calls)
            entry[f"false_{rule}"] = rate(false, n)
            entry[f"incomplete_{rule}"] = sum(v == "incomplete" for v in calls) / n
        entry["equivalent_rope"] = sum(r["rope"] == "equivalent" for r in rows) / n
        entry["group_false_5pct"] = rate(sum(r["group_p"] <= 0.05 for r in rows), n)
        for k in (1, 2):
            called = sum(decide(posterior(np.asarray(r["d"]) + k * sd, r["rho"], DEFAULT_ROPE)) == "better" for r in rows)
            entry[f"power_{k}sd"] = rate(called, n)
        table[name] = entry
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comparisons", type=int, default=1000, help="null comparisons (each runs every design)")
    ap.add_argument("--datasets", type=int, default=2, help="synthetic sets (generator seeds 101, 102, ...)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    sets = [dataset(101 + i) for i in range(args.datasets)]
    t1 = time.perf_counter()
    print(f"{args.datasets} synthetic set(s) of {len(sets[0][1])} sequences made in {t1 - t0:.0f} s", flush=True)
    results = Parallel(n_jobs=args.jobs, batch_size=8)(
        delayed(one_comparison)(sets[c % len(sets)], c) for c in range(args.comparisons))
    seconds = time.perf_counter() - t0
    table = summarise(results)
    pct = lambda v: f"{v[0] * 100:.1f}% [{v[1] * 100:.1f}, {v[2] * 100:.1f}]"  # noqa: E731
    print(f"\n{args.comparisons} null comparisons per design, {seconds:.0f} s in all ({args.jobs} jobs)")
    print("design | learner acc | sd of a unit diff | false calls, ROPE +-0.005 | false calls, zero ROPE | "
          "equivalent | power 1 sd | power 2 sd | group effect p <= 0.05")
    for name, e in table.items():
        print(f"{name} | {e['mean_acc']:.3f} | {e['sd_unit_diff']:.4f} | {pct(e['false_rope'])} | "
              f"{pct(e['false_zero'])} | {e['equivalent_rope'] * 100:.1f}% | {pct(e['power_1sd'])} | "
              f"{pct(e['power_2sd'])} | {pct(e['group_false_5pct'])}")
    print(json.dumps({"comparisons": args.comparisons, "seconds": round(seconds, 1), "designs": table}))


if __name__ == "__main__":
    main()
