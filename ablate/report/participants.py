"""Who an arm helps: per-participant accuracy of each arm, its paired difference to the baseline,
and whether an arm's effect differs between groups of participants.

From the predictions every trial stores per validation sequence (ablate.study.predictions). A
sequence is validated once per (repeat, seed); its correctness is averaged over them. A
participant's accuracy is the mean over their sequences; a group's difference is the mean of its
participants' differences (each participant counts once, as in the fold scores).

Intervals come from a two-stage bootstrap (participants, then sequences within each participant;
the paired difference of a sequence stays paired): per participant the within stage alone, per
group both; they are descriptive. Whether an arm's effect differs between two groups (e.g. left-
against right-dominant signers) is decided by a permutation test of the participants' group
labels (the gap between the groups' mean differences; every relabelling when there are at most
20,000), at 0.05/m with m the attributes (Bonferroni): the sentences of one arm together hold a
5% family-wise error rate, as its verdict holds its rate per arm. The test treats participants as
exchangeable; those validated in the same fold share that fold's training noise, which it does
not model (benchmarks/calibration.py measures the rule on nulls). With few participants in a
group no relabelling may reach the level (`too_few`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna

from ablate.report.verdicts import Design
from ablate.study import predictions
from ablate.study.records import TrialRecord

BOOT = 2000
PERMUTATIONS = 20_000
ALPHA = 0.05


def _correct(t: optuna.trial.FrozenTrial, labels: np.ndarray, design: Design) -> np.ndarray | None:
    """Mean correctness per sequence over the trial's (repeat, seed) passes; None when the trial
    lacks a fold's predictions (a study from before they were stored, or an unfinished trial)."""
    preds = predictions.predictions(t)
    if len(preds) < design.slots:
        return None
    total, count = np.zeros(labels.size), np.zeros(labels.size)
    for p in preds.values():
        np.add.at(total, p.index, (p.predicted == labels[p.index]).astype(np.float64))
        np.add.at(count, p.index, 1.0)
    if (count != design.repeats * design.seeds).any():
        return None
    return total / count


def _within(diffs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """BOOT bootstrap means of one participant's per-sequence differences (multinomial over their
    distinct values: exact resampling, cheap however many sequences)."""
    values, counts = np.unique(diffs, return_counts=True)
    draws = rng.multinomial(diffs.size, counts / diffs.size, size=BOOT)
    return draws @ values / diffs.size


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


Groups = tuple[str, str, np.ndarray]  # name of group A, of group B, and per participant 1 (A), 0 (B) or -1 (neither)


def _groups(facts: list[dict[str, Any]]) -> dict[str, Groups]:
    """attribute -> its two groups, where both have a member."""
    out: dict[str, Groups] = {}
    hand = np.array([{"left": 1, "right": 0}.get(f["dominant_hand"], -1) for f in facts])
    out["dominant hand"] = ("left-dominant", "right-dominant", hand)
    for key, label in (("median_length", "sequence length"), ("no_hand_share", "frames without hands")):
        v = np.array([f[key] for f in facts], dtype=np.float64)
        out[label] = (f"{label} above the median", f"{label} at or below it", (v > np.median(v)).astype(int))
    gen = [f.get("generator") for f in facts]
    if all(gen):
        out["left-handed (generator)"] = ("left-handed", "right-handed", np.array([int(g["left_handed"]) for g in gen]))
        roll = np.array([g.get("roll_deg", 0.0) != 0.0 for g in gen])
        tilt = np.array([abs(g["tilt_deg"]) for g in gen])
        out["camera tilt (generator)"] = ("camera rolled (planted)", "camera level", roll.astype(int)) if roll.any() \
            else ("tilted more than the median", "tilted less", (tilt > np.median(tilt)).astype(int))
    return {k: v for k, v in out.items() if (v[2] == 1).any() and (v[2] == 0).any()}


def permutation_p(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """(two-sided p, the smallest p attainable) of the gap between the mean of `values` in `mask`
    and outside it, under relabelling of the participants: every relabelling when there are at
    most PERMUTATIONS of them, else PERMUTATIONS random ones (plus the observed one)."""
    n, k = values.size, int(mask.sum())
    observed = abs(values[mask].mean() - values[~mask].mean())
    total = math.comb(n, k)
    if total <= PERMUTATIONS:
        combos = np.array(list(itertools.combinations(range(n), k)))
        chosen = np.zeros((total, n), dtype=bool)
        chosen[np.arange(total)[:, None], combos] = True
    else:
        chosen = rng.permuted(np.tile(mask, (PERMUTATIONS, 1)), axis=1)
    sums = chosen.astype(np.float64) @ values
    gaps = np.abs(sums / k - (values.sum() - sums) / (n - k))
    hits = int((gaps >= observed - 1e-12).sum())
    if total <= PERMUTATIONS:
        return hits / total, (2 if 2 * k == n else 1) / total
    return (hits + 1) / (PERMUTATIONS + 1), 1 / (PERMUTATIONS + 1)


def _effect(arm: str, attribute: str, group: Groups, point: np.ndarray, boot: np.ndarray,
            level: float, rng: np.random.Generator) -> dict[str, Any]:
    """The arm's mean difference in each group, with bootstrap intervals (descriptive), and the
    permutation test of the gap between them (the decision)."""
    names, reps = [], []
    out: dict[str, Any] = {"arm": arm, "attribute": attribute, "groups": {}, "level": level}
    for name, mask in ((group[0], group[2] == 1), (group[1], group[2] == 0)):
        members = np.flatnonzero(mask)
        pick = members[rng.integers(0, members.size, (BOOT, members.size))]
        rep = boot[pick, rng.integers(0, BOOT, pick.shape)].mean(axis=1)
        lo, hi = _interval(rep, 0.95)
        out["groups"][name] = {"participants": int(members.size), "difference": float(point[members].mean()),
                               "low": lo, "high": hi}
        names.append(name)
        reps.append(rep)
    a, b = (out["groups"][n]["difference"] for n in names)
    out["gap"], (out["gap_low"], out["gap_high"]) = a - b, _interval(reps[0] - reps[1], 0.95)
    inside = group[2] >= 0
    out["p"], out["p_smallest"] = permutation_p(point[inside], group[2][inside] == 1, rng)
    out["differs"] = bool(out["p"] <= 1 - level)
    out["too_few"] = bool(out["p_smallest"] > 1 - level)  # no relabelling could reach the level
    if out["differs"]:
        more, less = (names[0], names[1]) if abs(a) >= abs(b) else (names[1], names[0])
        d_more, d_less = out["groups"][more]["difference"], out["groups"][less]["difference"]
        word = "better" if d_more > 0 else "worse"
        out["text"] = (f"{arm} is {word} mostly for {more} signers ({d_more:+.3f}) rather than for {less} ones "
                       f"({d_less:+.3f}): gap {out['gap']:+.3f}, permutation p {out['p']:.2g} <= "
                       f"{1 - level:.2g} (by {attribute})")
    return out


def panel(study: optuna.Study, reps: dict[str, TrialRecord | None], baseline: str, design: Design,
          complete: dict[str, bool]) -> dict[str, Any]:
    """{"participants": [...], "participant_effects": [...], "participant_note": str} (see the module).
    Only arms whose trial completed the design (`complete`) are in it, as only they get verdicts."""
    arms = [a for a, ok in complete.items() if ok]
    seqs = predictions.read_sequences(study)
    empty = {"participants": [], "participant_effects": []}
    if seqs is None:
        return empty | {"participant_note": "this study did not record its sequences (begun by an older version)"}
    who, labels, facts = seqs
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    correct = {a: _correct(trials[r.number], labels, design) for a, r in reps.items() if r and a in arms}
    correct = {a: c for a, c in correct.items() if c is not None}
    if baseline not in correct:
        return empty | {"participant_note": "the baseline has no complete per-sequence predictions yet"}
    n_p = len(facts)
    acc = {a: np.array([c[who == p].mean() if (who == p).any() else math.nan for p in range(n_p)])
           for a, c in correct.items()}
    rng = np.random.default_rng(0)
    rows = [{k: f[k] for k in f} | {"arms": {}} for f in facts]
    groups = _groups(facts)
    level = 1 - ALPHA / max(1, len(groups))  # per arm, over its attributes: as its verdict, per arm
    effects = []
    for a in correct:
        diff = acc[a] - acc[baseline]
        boot = np.stack([_within(correct[a][who == p] - correct[baseline][who == p], rng) for p in range(n_p)])
        for p, row in enumerate(rows):
            entry = {"accuracy": float(acc[a][p]), "difference": 0.0}
            if a != baseline:
                entry |= {"difference": float(diff[p])} | dict(zip(("low", "high"), _interval(boot[p], 0.95), strict=True))
            row["arms"][a] = entry
        if a != baseline:
            effects += [_effect(a, attr, g, diff, boot, level, rng) for attr, g in groups.items()]
    missing = [a for a in complete if a not in correct]
    note = f"no per-sequence predictions for {', '.join(missing)} (incomplete or older trials)" if missing else ""
    return {"participants": rows, "participant_effects": effects, "participant_note": note}
