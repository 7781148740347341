"""Paired comparison of ablation arms over the same cross-validation folds and seeds.

Every arm is scored on the same K participant-grouped folds x S seeds, so arm scores are vectors of
n = K*S entries where index i = seed*K + fold is the same split for every arm (None or NaN where a
trial was pruned or failed). Arms are compared with the baseline on the indices both have.

The verdict rests on the Nadeau-Bengio corrected resampled t-test, Holm-adjusted across arms. The
Wilcoxon signed-rank p is reported beside it as a check that does not assume normal differences;
like the plain t-test it ignores that fold scores share training data, so it is optimistic.
Higher scores are better (accuracies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from ablate.errors import UserError, unknown

MIN_WILCOXON_PAIRS = 6  # with 5 pairs the smallest exact two-sided p is 2/2**5 = 0.0625 > 0.05
# Std of one arm's scores across its folds and seeds above which the row is flagged. Accuracy
# points: healthy participant-grouped folds differ by a few points; above 0.10 usually one fold or
# seed collapsed (diverged, or one participant far off the rest) and the mean hides it.
HIGH_FOLD_STD = 0.10
# Differences are rounded to 12 decimals: accuracy differences are multiples of 1/n_test, far
# coarser, while float rounding (0.3 - 0.1 != 0.5 - 0.3) would otherwise break real ties and turn
# "identical on every fold" into a tiny nonzero variance with an absurd t.
_DECIMALS = 12

Rope = tuple[float, float]


class CorrectedTTest(NamedTuple):
    """Result of `corrected_ttest`; `reason` says why p is nan or was set by convention."""

    mean_diff: float
    se: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    reason: str = ""


class WilcoxonResult(NamedTuple):
    """Result of `wilcoxon_test`; `reason` says why p is nan or was set by convention."""

    p: float
    reason: str = ""


def _slots(values: Sequence[float | None] | np.ndarray, length: int = 0) -> np.ndarray:
    """float64 with None as NaN, padded with NaN (missing) up to `length`."""
    vals = [math.nan if v is None else v for v in values]
    return np.array(vals + [math.nan] * (length - len(vals)), dtype=np.float64)


def _present(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """The finite entries (None and NaN mean missing)."""
    arr = _slots(values)
    return arr[np.isfinite(arr)]


def _diffs(diffs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Differences as a flat float64 array, rounded to _DECIMALS (see there)."""
    return np.round(np.asarray(diffs, dtype=np.float64).ravel(), _DECIMALS)


def _t_quantile(confidence: float, df: int) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def mean_ci(
    scores: Sequence[float | None] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of the present scores.

    mean -/+ t_{n-1, (1+confidence)/2} * s / sqrt(n), with s the sample std (ddof 1).
    Descriptive only: fold scores share training data and seeds share folds, so they are not
    independent and this interval is too narrow; to compare arms trust `corrected_ttest`.
    Fewer than 2 scores: nan bounds (and nan mean for none); all scores equal: zero width.
    """
    x = _present(scores)
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(x))
    if n < 2:
        return mean, math.nan, math.nan
    half = _t_quantile(confidence, n - 1) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def corrected_ttest(
    diffs: Sequence[float] | np.ndarray, n_train: float, n_test: float, confidence: float = 0.95
) -> CorrectedTTest:
    """Nadeau-Bengio corrected resampled t-test on n paired differences (arm minus baseline).

    Formula (d_i = difference on fold-and-seed i, i = 1..n):
        mean_diff = (1/n) * sum_i d_i
        s2        = (1/(n-1)) * sum_i (d_i - mean_diff)^2          (sample variance)
        se        = sqrt( (1/n + n_test/n_train) * s2 )
        t         = mean_diff / se,   with n - 1 degrees of freedom
        p         = 2 * P(T_{n-1} >= |t|)                            (two-sided, scipy.stats.t)
        CI        = mean_diff -/+ t_{n-1, (1+confidence)/2} * se
    The plain paired t-test uses s2/n; the n_test/n_train term corrects for the correlation between
    folds that share training data (for K-fold CV n_test/n_train = 1/(K-1); pass the actual, or the
    average, fold sizes). Sources: C. Nadeau and Y. Bengio, "Inference for the Generalization
    Error", Machine Learning 52(3):239-281, 2003 (corrected resampled t-test); R. R. Bouckaert and
    E. Frank, "Evaluating the Replicability of Significance Tests for Comparing Learning
    Algorithms", PAKDD 2004, LNCS 3056:3-12 (the same correction for r x K-fold CV, n = r*K).

    Edge cases (no division by zero, no warnings): n < 2 -> se, t, p and the CI are nan (reason
    given). All differences equal (zero variance): if they are all 0 the arms tie on every split,
    so t = 0 and p = 1; otherwise every split moved the same way by the same amount, which we take
    as a certain difference: t = +-inf, p = 0, CI = [mean_diff, mean_diff] (reason given).
    """
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    d = _diffs(diffs)
    n = d.size
    nan = math.nan
    if n == 0:
        return CorrectedTTest(nan, nan, nan, nan, nan, nan, "no pairs: no test possible")
    mean = float(np.mean(d))
    if n < 2:
        return CorrectedTTest(mean, nan, nan, nan, nan, nan, "only 1 pair: the t-test needs at least 2")
    if np.ptp(d) == 0.0:
        if d[0] == 0.0:
            return CorrectedTTest(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, "identical scores on every pair: p set to 1")
        same = float(d[0])
        reason = "the same difference on every pair (zero variance): p set to 0"
        return CorrectedTTest(same, 0.0, math.copysign(math.inf, same), 0.0, same, same, reason)
    se = math.sqrt((1.0 / n + n_test / n_train) * float(np.var(d, ddof=1)))
    t = mean / se
    p = float(2.0 * stats.t.sf(abs(t), n - 1))
    half = _t_quantile(confidence, n - 1) * se
    return CorrectedTTest(mean, se, t, p, mean - half, mean + half)


def wilcoxon_test(diffs: Sequence[float] | np.ndarray) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank p (scipy.stats.wilcoxon) on paired differences, or nan.

    Needs at least 6 pairs: with n pairs the smallest attainable two-sided p is 2/2**n, which is
    0.0625 for n = 5, so fewer pairs could never reach 0.05; p is then nan with a reason.
    zero_method="zsplit": a zero difference (the arms tie on that split) stays in the ranking with
    its rank split half to each sign, so the sample size is the number of pairs ("wilcox" drops
    ties and tests fewer pairs). Up to 13 pairs scipy's method="auto" is exact (or, with ties or
    zeros, an exhaustive permutation over the signs of the nonzero differences), where all zero
    methods agree; beyond, it uses the normal approximation, where zsplit counts the zeros in n and
    in the tie correction. All differences zero -> p = 1, set here (scipy gives nan and warns for
    the other zero methods, and older scipy versions differ).
    """
    d = _diffs(diffs)
    if d.size < MIN_WILCOXON_PAIRS:
        return WilcoxonResult(
            math.nan, f"only {d.size} pairs: the Wilcoxon test needs at least {MIN_WILCOXON_PAIRS}"
        )
    if not np.any(d):
        return WilcoxonResult(1.0, "identical scores on every pair: Wilcoxon p set to 1")
    return WilcoxonResult(float(stats.wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue))


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order; NaN stays NaN.

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m):
        adjusted p_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))
    The running max keeps the adjusted values monotone in the raw ones. Reject where adjusted < alpha:
    controls the family-wise error rate at alpha (S. Holm, "A Simple Sequentially Rejective Multiple
    Test Procedure", Scandinavian Journal of Statistics 6(2):65-70, 1979). NaNs (no test) are not
    counted in m.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def _check_alpha_rope(alpha: float, rope: Rope | None) -> None:
    if not 0.0 < alpha < 1.0:
        raise UserError(f"alpha must be between 0 and 1, got {alpha}")
    if rope is not None and not (len(rope) == 2 and rope[0] < rope[1]):
        raise UserError(f"rope must be (low, high) with low < high, got {rope}")


def verdict(
    mean_diff: float,
    ci_low: float,
    ci_high: float,
    p_adj: float,
    alpha: float = 0.05,
    rope: Rope | None = None,
) -> str:
    """One of "better", "worse", "equivalent", "no detectable difference", "too few pairs".

    p_adj is the Holm-adjusted corrected-t p; ci_low/ci_high its (unadjusted) corrected CI.
    nan p (fewer than 2 pairs) -> "too few pairs"; p_adj < alpha -> "better" or "worse" by the sign
    of mean_diff (higher scores are better); else, with a region of practical equivalence
    rope = (low, high) given, "equivalent" when the whole CI lies inside it; else "no detectable
    difference" (which is not evidence that the arms are the same).
    """
    _check_alpha_rope(alpha, rope)
    if math.isnan(p_adj):
        return "too few pairs"
    if p_adj < alpha:
        return "better" if mean_diff > 0 else "worse"
    if rope is not None and rope[0] <= ci_low and ci_high <= rope[1]:
        return "equivalent"
    return "no detectable difference"


@dataclass
class ArmStats:
    """One report row: an arm, its scores, and its paired comparison with the baseline.

    Floats are nan where a value does not apply (the baseline's p-values, too few scores);
    `to_json` turns those into None. diff* are arm minus baseline on the common indices.
    """

    arm: str
    n: int  # scores present
    mean: float
    ci_low: float
    ci_high: float
    n_pairs: int = 0  # indices present in both this arm and the baseline
    diff: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    p_corrected: float = math.nan
    p_wilcoxon: float = math.nan
    p_corrected_holm: float = math.nan
    p_wilcoxon_holm: float = math.nan
    verdict: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """dataclasses.asdict with nan and inf as None (JSON has neither)."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in asdict(self).items()}


def _row(name: str, x: np.ndarray, n_slots: int, alpha: float, high_std: float) -> ArmStats:
    """The arm's own statistics; comparison fields are filled in by compare_arms."""
    present = np.isfinite(x)
    mean, low, high = mean_ci(x[present], 1.0 - alpha)
    row = ArmStats(name, int(present.sum()), mean, low, high)
    missing = n_slots - row.n
    if row.n == 0:
        row.warnings.append("no scores (every run missing)")
    elif missing:
        row.warnings.append(f"{missing} of {n_slots} runs missing (pruned or failed folds)")
    if row.n >= 2 and (std := float(np.std(x[present], ddof=1))) > high_std:
        row.warnings.append(f"high fold variance: std {std:.2f} across folds (above {high_std:.2f})")
    return row


def compare_arms(
    scores: Mapping[str, Sequence[float | None]],
    baseline: str,
    n_train: float,
    n_test: float,
    alpha: float = 0.05,
    rope: Rope | None = None,
    high_std: float = HIGH_FOLD_STD,
) -> list[ArmStats]:
    """One ArmStats per arm: the baseline first, then the other arms in the given order.

    scores[arm][i] is the score on fold-and-seed i (the same split for every arm), None or NaN
    where missing; lists may be shorter than the longest (the tail is missing). Each arm is paired
    with the baseline on the indices both have. n_train, n_test: training and test set sizes (the
    average per fold is fine) for `corrected_ttest`. Intervals are at confidence 1 - alpha.
    Holm adjustment runs across the non-baseline arms, separately for the corrected and the
    Wilcoxon p; the verdict uses the Holm-adjusted corrected p. The baseline row has diff 0, nan
    p-values and verdict "baseline".
    """
    if baseline not in scores:
        raise unknown("baseline arm", baseline, scores)
    _check_alpha_rope(alpha, rope)
    n_slots = max(len(v) for v in scores.values())
    arrays = {name: _slots(vals, n_slots) for name, vals in scores.items()}
    base = arrays[baseline]
    rows = [_row(baseline, base, n_slots, alpha, high_std)]
    rows[0].n_pairs, rows[0].diff, rows[0].verdict = rows[0].n, 0.0, "baseline"
    for name, x in arrays.items():
        if name == baseline:
            continue
        row = _row(name, x, n_slots, alpha, high_std)
        both = np.isfinite(x) & np.isfinite(base)
        d = x[both] - base[both]
        tt = corrected_ttest(d, n_train, n_test, confidence=1.0 - alpha)
        wx = wilcoxon_test(d)
        row.n_pairs, row.diff, row.diff_low, row.diff_high = d.size, tt.mean_diff, tt.ci_low, tt.ci_high
        row.p_corrected, row.p_wilcoxon = tt.p, wx.p
        row.warnings += [tt.reason] if tt.reason else []
        if math.isnan(wx.p) and not math.isnan(tt.p):  # below 2 pairs the t-test reason says it all
            row.warnings.append(wx.reason)
        rows.append(row)
    others = rows[1:]
    p_corrected = holm([r.p_corrected for r in others])
    p_wilcoxon = holm([r.p_wilcoxon for r in others])
    for row, pc, pw in zip(others, p_corrected, p_wilcoxon, strict=True):
        row.p_corrected_holm, row.p_wilcoxon_holm = float(pc), float(pw)
        row.verdict = verdict(row.diff, row.diff_low, row.diff_high, row.p_corrected_holm, alpha, rope)
    return rows
