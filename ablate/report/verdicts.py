"""Each arm against the baseline: a verdict from the Bayesian correlated t-test with a ROPE, what the
design could have detected, and the frequentist corrected t-test with Holm as a detail.

Every arm is scored on the same R repeats x S seeds x K folds; a score vector has R*S*K slots,
slot (r*S + s)*K + k (None or NaN where missing). The unit of the tests is (repeat, fold): the S
seeds of a unit are averaged first (seeds make a unit's score less noisy; they are not more
independent data, so they never add to n). n = R*K units.

No verdict without the full design: an arm (or a baseline) with a unit missing, a trial that did
not complete (pruned, failed, unfinished), or zero variance of its differences is 'incomplete'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ablate.errors import UserError, unknown
from ablate.report.stats import (DEFAULT_ROPE, Posterior, Rope, decide, detectable, holm, mean_ci,
                                 posterior, t_quantile)

VERDICTS = ("baseline", "better", "worse", "equivalent", "undecided", "incomplete")
# Std of one arm's unit scores above which the row is flagged. Accuracy points: healthy
# participant-grouped folds differ by a few points; above 0.10 usually one fold collapsed.
HIGH_FOLD_STD = 0.10


class Design(NamedTuple):
    repeats: int
    seeds: int
    folds: int

    @property
    def slots(self) -> int:
        return self.repeats * self.seeds * self.folds

    @property
    def units(self) -> int:
        return self.repeats * self.folds

    @classmethod
    def of(cls, a: Mapping[str, Any]) -> Design:
        """The design of an `analyze` dict (older reports have no repeats: 1)."""
        return cls(int(a.get("repeats") or 1), int(a.get("seeds") or 1), int(a.get("folds") or 1))

    def place(self, slot: int) -> tuple[int, int, int]:
        """(repeat, seed, fold) of score slot (repeat * seeds + seed) * folds + fold."""
        return slot // (self.seeds * self.folds), slot // self.folds % self.seeds, slot % self.folds

    def label(self, slot: int) -> str:
        r, s, k = self.place(slot)
        return (f"repeat {r} " if self.repeats > 1 else "") + f"fold {k} seed {s}"


def units_of(values: Sequence[float | None] | np.ndarray, design: Design) -> np.ndarray:
    """[R*K] unit scores: the mean over seeds of each (repeat, fold); NaN where any seed is missing."""
    vals = [math.nan if v is None else float(v) for v in values][: design.slots]
    arr = np.array(vals + [math.nan] * (design.slots - len(vals)), dtype=np.float64)
    cube = arr.reshape(design.repeats, design.seeds, design.folds)
    out = np.full((design.repeats, design.folds), math.nan)
    whole = np.isfinite(cube).all(axis=1)
    out[whole] = cube.mean(axis=1)[whole]
    return out.ravel()


@dataclass
class ArmStats:
    """One report row. Floats are nan where a value does not apply; `to_json` makes those None."""

    arm: str
    n: int  # scores present, of design.slots
    n_units: int  # complete (repeat, fold) units, of design.units
    mean: float  # over the complete units
    ci_low: float  # descriptive Student-t interval of the unit scores (they are not independent)
    ci_high: float
    n_pairs: int = 0  # units present in both this arm and the baseline
    diff: float = math.nan
    diff_low: float = math.nan  # the 95% posterior interval the verdict is decided on
    diff_high: float = math.nan
    p_worse: float = math.nan
    p_equivalent: float = math.nan
    p_better: float = math.nan
    mde: float = math.nan  # the smallest true improvement called "better" with 80% power
    effect_size: float = math.nan  # diff / std of the unit differences (Cohen's d_z)
    sd_diff: float = math.nan
    se_diff: float = math.nan  # the corrected scale of the mean difference
    verdict: str = ""
    # details (frequentist, not the verdict): corrected t p, Holm-adjusted, interval at the Holm step's level
    p_corrected: float = math.nan
    p_corrected_holm: float = math.nan
    holm_confidence: float = math.nan
    holm_low: float = math.nan
    holm_high: float = math.nan
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """dataclasses.asdict with nan and inf as None (JSON has neither)."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}


def check_rope(rope: Rope, alpha: float = 0.05) -> None:
    if not 0.0 < alpha < 1.0:
        raise UserError(f"alpha must be between 0 and 1, got {alpha}")
    if not (len(rope) == 2 and all(math.isfinite(v) for v in rope) and rope[0] <= 0.0 <= rope[1] and rope[0] < rope[1]):
        raise UserError(f"rope must be (low, high) with low <= 0 <= high and low < high, got {list(rope)}")


def _row(name: str, units: np.ndarray, n_scores: int, design: Design) -> ArmStats:
    present = units[np.isfinite(units)]
    mean, low, high = mean_ci(present, 0.95)
    row = ArmStats(name, n_scores, int(present.size), mean, low, high)
    if n_scores == 0:
        row.warnings.append("no scores (every run missing)")
    elif n_scores < design.slots:
        row.warnings.append(f"{design.slots - n_scores} of {design.slots} runs missing (pruned, failed or unfinished)")
    if present.size >= 2 and (std := float(np.std(present, ddof=1))) > HIGH_FOLD_STD:
        row.warnings.append(f"high fold variance: std {std:.2f} across folds (above {HIGH_FOLD_STD:.2f})")
    return row


def _compare(row: ArmStats, d: np.ndarray, post: Posterior, rho: float, rope: Rope, why: str) -> None:
    """Fill the comparison fields; `why` says what the design lacks ("" when it is complete)."""
    row.n_pairs, row.diff, row.sd_diff, row.se_diff = int(d.size), post.mean, post.sd, post.se
    row.p_worse, row.p_equivalent, row.p_better = post.p_worse, post.p_equivalent, post.p_better
    row.diff_low, row.diff_high = post.low, post.high
    row.p_corrected = post.p_two_sided
    if post.sd and math.isfinite(post.sd):
        row.effect_size = post.mean / post.sd
    row.mde = detectable(post.sd, d.size, rho, rope)
    if why:
        row.verdict = "incomplete"
        row.warnings.append(f"{why}: no verdict without the full design")
        # a partial comparison shows its difference, but no probabilities and no Holm step
        row.p_worse = row.p_equivalent = row.p_better = row.p_corrected = math.nan
    else:
        row.verdict = decide(post)
        if post.reason:
            row.warnings.append(post.reason)


def compare_arms(scores: Mapping[str, Sequence[float | None]], baseline: str, design: Design, rho: float,
                 rope: Rope = DEFAULT_ROPE, alpha: float = 0.05,
                 complete: Mapping[str, bool] | None = None) -> list[ArmStats]:
    """One ArmStats per arm: the baseline first, then the others in the given order.

    scores[arm]: R*S*K slots (see the module docstring); rho = n_test / n_train (average fold
    sizes); `complete[arm]` False marks an arm whose trial did not complete (pruned, failed,
    unfinished): it gets no verdict, whatever scores it has. Descriptive intervals are at 95%;
    Holm (details only) runs at alpha across the arms that have a full design.
    """
    if baseline not in scores:
        raise unknown("baseline arm", baseline, scores)
    check_rope(rope, alpha)
    complete = complete or {}
    units = {a: units_of(v, design) for a, v in scores.items()}
    counts = {a: sum(v is not None and math.isfinite(float(v)) for v in vals) for a, vals in scores.items()}
    base = units[baseline]
    rows = [_row(baseline, base, counts[baseline], design)]
    rows[0].n_pairs, rows[0].diff, rows[0].verdict = rows[0].n_units, 0.0, "baseline"
    base_whole = rows[0].n_units == design.units and complete.get(baseline, True)
    if not base_whole:
        rows[0].warnings.append("the baseline lacks part of the design: no arm gets a verdict")
    for name, x in units.items():
        if name == baseline:
            continue
        row = _row(name, x, counts[name], design)
        both = np.isfinite(x) & np.isfinite(base)
        d = x[both] - base[both]
        why = ("the baseline lacks part of the design" if not base_whole else
               f"{d.size} of {design.units} units paired with the baseline" if row.n_units < design.units else
               "its trial did not complete (pruned, failed or unfinished)" if not complete.get(name, True) else "")
        _compare(row, d, posterior(d, rho, rope), rho, rope, why)
        rows.append(row)
    _holm_details(rows[1:], alpha)
    return rows


def _holm_details(rows: list[ArmStats], alpha: float) -> None:
    """Holm-adjusted corrected-t p-values and each arm's interval at the level its Holm step used."""
    adjusted, level = holm([r.p_corrected for r in rows])
    for row, p, lv in zip(rows, adjusted, level, strict=True):
        row.p_corrected_holm = float(p)
        if math.isfinite(lv) and row.se_diff > 0:
            conf = 1.0 - alpha * float(lv)
            half = t_quantile(conf, row.n_pairs - 1) * row.se_diff
            row.holm_confidence, row.holm_low, row.holm_high = conf, row.diff - half, row.diff + half
