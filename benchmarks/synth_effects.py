"""Do the planted effects of the synthetic data show up? A proxy classifier says.

Generates the default synthetic set (another seed than the tests'), reads it back through the
Kaggle files, and fits a simple proxy (both hands and the arms resampled to 16 frames, normalised
per sequence by the shoulders, StandardScaler + logistic regression) under:
  (a) participant-grouped folds (StratifiedGroupKFold) vs random folds (StratifiedKFold);
  (b) grouped folds, with vs without horizontally flipped copies of the training sequences;
  (c) grouped folds, x/y vs x/y/z features;
  (d) grouped folds on un-normalised coordinates (only centred), with vs without random
      scale/rotation copies of the training sequences.
Run: python benchmarks/synth_effects.py [--signs N --participants N --reps N --seed N --difficulty X]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.data.kaggle import read_landmarks  # noqa: E402
from ablate.data.landmarks import LEFT_HAND_IDX, RIGHT_HAND_IDX, mirror, pose  # noqa: E402
from ablate.data.synth import SynthConfig, generate, left_handed, plan  # noqa: E402

POINTS = RIGHT_HAND_IDX + LEFT_HAND_IDX + [pose(i) for i in (0, 11, 12, 13, 14, 15, 16)]
N_T = 16  # resampled frames
FOLDS = 5
JOBS = 2


def _fill_resample(v: np.ndarray) -> np.ndarray:
    """[T, P, C] with NaN frames -> [N_T, P, C]: NaNs filled by interpolation in time (0 when a
    point is never seen), then linearly resampled to N_T frames."""
    t = v.shape[0]
    grid = np.linspace(0, t - 1, N_T)
    flat = v.reshape(t, -1)
    out = np.zeros((N_T, flat.shape[1]))
    for j in range(flat.shape[1]):
        ok = ~np.isnan(flat[:, j])
        if ok.any():
            out[:, j] = np.interp(grid, np.flatnonzero(ok), flat[ok, j])
    return out.reshape(N_T, *v.shape[1:])


def features(frames: np.ndarray, use_z: bool, normalise: bool = True) -> np.ndarray:
    """Proxy features of one sequence [T, 543, 3] -> 1-D vector."""
    pts = frames[:, POINTS].astype(np.float64)
    sh = frames[:, [pose(11), pose(12)], :2].astype(np.float64)
    centre = sh.mean(axis=(0, 1))
    scale = np.linalg.norm(sh[:, 0] - sh[:, 1], axis=-1).mean() if normalise else 1.0
    xy = (pts[..., :2] - centre) / scale
    parts = [xy, pts[..., 2:] / scale] if use_z else [xy]
    seen = ~np.isnan(frames[:, [RIGHT_HAND_IDX[0], LEFT_HAND_IDX[0]], 0])
    return np.concatenate([_fill_resample(np.concatenate(parts, -1)).ravel(),
                           _fill_resample(seen[:, :, None].astype(float)).ravel()])


def _scale_rotate(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random scale (x0.7-1.4) and rotation (+-25 degrees) of x/y around the shoulders' midpoint."""
    out = frames.copy()
    c = np.nanmean(frames[:, [pose(11), pose(12)], :2], axis=(0, 1))
    a, s = np.radians(rng.uniform(-25, 25)), np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out[..., :2] = (frames[..., :2] - c) @ rot.T + c
    return out


def _fit_score(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300))
    with warnings.catch_warnings():  # not always converged in 300 steps; a proxy needs no more
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_tr, y_tr)
    return model.predict(x_te) == y_te


def cross_val(x: np.ndarray, y: np.ndarray, groups: np.ndarray, grouped: bool,
              extra: np.ndarray | None = None) -> np.ndarray:
    """Per-sequence correctness over the folds; `extra` = augmented copies of every sequence
    (same order as x), added to the training side only."""
    folds = (StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(x, y, groups) if grouped
             else StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, y))
    folds = list(folds)

    def train(tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if extra is None:
            return x[tr], y[tr]
        return np.concatenate([x[tr], extra[tr]]), np.concatenate([y[tr], y[tr]])

    # one single-threaded fit per core: BLAS threads fighting over 2 cores made fits 5x slower
    scores = Parallel(n_jobs=JOBS)(delayed(_fit_score)(*train(tr), x[te], y[te]) for tr, te in folds)
    correct = np.zeros(len(y), dtype=bool)
    for (_, te), ok in zip(folds, scores):
        correct[te] = ok
    return correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = SynthConfig()
    ap.add_argument("--signs", type=int, default=d.n_signs)
    ap.add_argument("--participants", type=int, default=d.n_participants)
    ap.add_argument("--reps", type=int, default=d.reps)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--difficulty", type=float, default=d.difficulty)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cfg = SynthConfig(n_signs=args.signs, n_participants=args.participants, reps=args.reps,
                      seed=args.seed, difficulty=args.difficulty)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(Path(tmp), cfg, workers=args.workers)
        rows = plan(cfg)
        seqs = [read_landmarks(Path(tmp) / r.path) for r in rows]
    print(f"generated {summary['sequences']} sequences in {summary['seconds']:.1f} s "
          f"(frames median {summary['frames']['median']:.0f}, max {summary['frames']['max']}, "
          f"{summary['frames']['over_384']} over 384); {cfg}")
    y = np.array([r.sign for r in rows])
    groups = np.array([r.participant_id for r in rows])
    lefty = np.isin(groups, left_handed(cfg))
    rng = np.random.default_rng(0)
    x_xy = np.stack([features(s, use_z=False) for s in seqs])
    x_xyz = np.stack([features(s, use_z=True) for s in seqs])
    x_flip = np.stack([features(mirror(s), use_z=False) for s in seqs])
    x_raw = np.stack([features(s, use_z=False, normalise=False) for s in seqs])
    x_raw_aug = np.stack([features(_scale_rotate(s, rng), use_z=False, normalise=False) for s in seqs])

    results: list[tuple[str, np.ndarray]] = [
        ("(a) random folds (StratifiedKFold), x/y", cross_val(x_xy, y, groups, grouped=False)),
        ("(a) participant-grouped folds, x/y  [baseline]", cross_val(x_xy, y, groups, grouped=True)),
        ("(b) grouped, + hflip copies of training seqs", cross_val(x_xy, y, groups, True, x_flip)),
        ("(c) grouped, x/y/z", cross_val(x_xyz, y, groups, grouped=True)),
        ("(d) grouped, not scale-normalised", cross_val(x_raw, y, groups, grouped=True)),
        ("(d) grouped, not scale-normalised + scale/rotate copies",
         cross_val(x_raw, y, groups, True, x_raw_aug)),
    ]
    print(f"\nproxy: logistic regression, {FOLDS} folds, {len(y)} sequences, {len(set(y))} signs, "
          f"chance {1 / len(set(y)):.3f}; left-handed participants {len(left_handed(cfg))}"
          f"/{cfg.n_participants}")
    print(f"{'setting':58s} {'accuracy':>8s} {'left-handed':>11s} {'right-handed':>12s}")
    for name, correct in results:
        print(f"{name:58s} {correct.mean():8.3f} {correct[lefty].mean():11.3f} "
              f"{correct[~lefty].mean():12.3f}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
