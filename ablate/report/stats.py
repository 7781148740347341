"""The statistics of a paired comparison over cross-validation folds: the corrected t distribution,
the Bayesian correlated t-test with a region of practical equivalence, Holm, and power.

Inputs are paired differences d_i (arm minus baseline), one per unit i = (repeat, fold), each unit's
training seeds already averaged (ablate.report.verdicts). Higher scores are better (accuracies).

Every test here rests on one distribution. With n units, sample variance s2 of the d_i, and
rho = n_test / n_train (the correlation that folds sharing training data induce, Nadeau & Bengio
2003), the mean difference has scale
    se = sqrt((1/n + rho) * s2)
and (mean_true - mean_d) / se follows Student's t with n - 1 degrees of freedom. Read as a
frequentist statistic it is the corrected resampled t-test (C. Nadeau and Y. Bengio, "Inference
for the Generalization Error", Machine Learning 52(3):239-281, 2003; for r x K-fold CV with
n = r*K: R. R. Bouckaert and E. Frank, PAKDD 2004, LNCS 3056:3-12). Read as a posterior of the
true mean difference under a flat prior it is the Bayesian correlated t-test (A. Benavoli,
G. Corani, J. Demsar, M. Zaffalon, "Time for a Change: a Tutorial for Comparing Multiple
Classifiers Through Bayesian Analysis", JMLR 18(77):1-36, 2017, section 4), from which
P(worse), P(equivalent) and P(better) are the masses below, inside and above the ROPE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

Rope = tuple[float, float]

# A verdict needs this posterior probability. 0.975 per side: with a zero-width ROPE the rule is
# exactly the two-sided corrected t-test at 5%, and a ROPE only makes "better"/"worse" rarer, so
# both sides together call at most about 5% of true nulls (benchmarks/calibration.py measures it;
# 0.95 per side would allow about 10%).
DECISION = 0.975
# Default ROPE for accuracy: half a point either way; the space file's `rope:` or `--rope` overrides.
DEFAULT_ROPE: Rope = (-0.005, 0.005)
POWER = 0.8  # the power at which the smallest detectable difference is stated
# Differences are rounded to 12 decimals: accuracy differences are multiples of 1/n_test, far
# coarser, while float rounding (0.3 - 0.1 != 0.5 - 0.3) would otherwise break real ties and turn
# "identical on every unit" into a tiny nonzero variance with an absurd t.
_DECIMALS = 12
_ZERO_SD = 1e-9  # below any real spread of quantised accuracies (steps of 1/n_test), above float noise


class Posterior(NamedTuple):
    """The corrected t distribution of the mean difference, and what it says about the ROPE.
    `reason` is set (and the probabilities nan) when there is no distribution to speak of."""

    mean: float
    sd: float  # sample std of the differences (ddof 1)
    se: float
    df: int
    p_worse: float
    p_equivalent: float
    p_better: float
    low: float  # central interval at 2 * DECISION - 1 (95%): the one the verdict is decided on
    high: float
    p_two_sided: float  # the frequentist corrected t-test's p for "no difference"
    reason: str = ""


def diffs_of(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Differences as a flat float64 array, rounded to _DECIMALS (see there)."""
    return np.round(np.asarray(values, dtype=np.float64).ravel(), _DECIMALS)


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t quantile for a central interval at `confidence`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def mean_ci(scores: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of the finite scores.

    Descriptive only: fold scores share training data, so they are not independent and this
    interval is too narrow; arms are compared with `posterior`. Fewer than 2 scores: nan bounds.
    """
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(x))
    if x.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(confidence, x.size - 1) * float(np.std(x, ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def scale(s2: float, n: int, rho: float) -> float:
    """se = sqrt((1/n + rho) * s2): the corrected scale of a mean of n unit differences."""
    return math.sqrt((1.0 / n + rho) * s2)


def posterior(values: Sequence[float] | np.ndarray, rho: float, rope: Rope = DEFAULT_ROPE,
              decision: float = DECISION) -> Posterior:
    """The Bayesian correlated t-test on paired unit differences (see the module docstring).

        mean = (1/n) sum d_i,  s2 = sample variance,  se = sqrt((1/n + rho) s2),  df = n - 1
        P(better)     = P(T > (rope_high - mean)/se)       T ~ Student t(df)
        P(worse)      = P(T < (rope_low - mean)/se)
        P(equivalent) = 1 - P(better) - P(worse)
        interval      = mean -/+ t_{df, decision} * se   (the 95% central interval for 0.975)
        p_two_sided   = 2 P(T > |mean| / se)              (the corrected t-test)

    No distribution (nan probabilities, `reason` set) with fewer than 2 units or zero variance:
    identical differences on every unit (accuracies are quantised, so this happens with a few
    units) say nothing about how much they vary, and a t with zero scale would claim certainty.
    """
    if rho < 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be finite and >= 0, got {rho}")
    d = diffs_of(values)
    n, nan = d.size, math.nan
    mean = float(np.mean(d)) if n else nan
    if n < 2:
        return Posterior(mean, nan, nan, max(n - 1, 0), nan, nan, nan, nan, nan, nan,
                         f"{n} paired unit(s): the test needs at least 2")
    sd = float(np.std(d, ddof=1))
    if sd < _ZERO_SD:
        return Posterior(mean, 0.0, 0.0, n - 1, nan, nan, nan, nan, nan, nan,
                         f"the same difference ({mean:+.4f}) on all {n} units: zero variance, no test")
    se, df = scale(sd * sd, n, rho), n - 1
    p_better = float(stats.t.sf((rope[1] - mean) / se, df))
    p_worse = float(stats.t.cdf((rope[0] - mean) / se, df))
    half = float(stats.t.ppf(decision, df)) * se
    p = float(2.0 * stats.t.sf(abs(mean) / se, df))
    return Posterior(mean, sd, se, df, p_worse, max(0.0, 1.0 - p_better - p_worse), p_better,
                     mean - half, mean + half, p)


def decide(post: Posterior, decision: float = DECISION) -> str:
    """'better', 'worse' or 'equivalent' when that posterior probability reaches `decision`, else
    'undecided'; 'incomplete' when there is no posterior (post.reason). The three masses sum to 1,
    so at most one reaches 0.975 and the order of the checks does not matter. The ROPE is part of
    each mass: a difference that is certainly non-zero but certainly inside the ROPE is
    'equivalent', never 'better' or 'worse'."""
    if post.reason:
        return "incomplete"
    if post.p_better >= decision:
        return "better"
    if post.p_worse >= decision:
        return "worse"
    if post.p_equivalent >= decision:
        return "equivalent"
    return "undecided"


def _reach(sd: float, n: int, rho: float, decision: float, power: float) -> float:
    """How far beyond the ROPE's edge a true difference must lie to be called with `power`."""
    df = n - 1
    return (float(stats.t.ppf(decision, df)) + float(stats.t.ppf(power, df))) * scale(sd * sd, n, rho)


def detectable(sd: float, n: int, rho: float, rope: Rope = DEFAULT_ROPE, decision: float = DECISION,
               power: float = POWER) -> float:
    """The smallest true improvement the rule calls 'better' with probability `power`, given the
    std `sd` of the unit differences: rope_high + (t_{df,decision} + t_{df,power}) * se.

    The usual normal-theory approximation (the posterior's lower bound, mean - t*se, must clear
    the ROPE's edge; the mean falls short of the truth by more than t_{power}*se in 1 - power of
    studies). nan when there is no variance estimate (fewer than 2 units, zero variance)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    return rope[1] + _reach(sd, n, rho, decision, power)


def repeats_needed(sd: float, folds: int, rho: float, beyond: float, rope: Rope = DEFAULT_ROPE,
                   decision: float = DECISION, power: float = POWER, most: int = 100) -> int | None:
    """The fewest repeats R (R x folds units) at which a true improvement of `beyond` past the
    ROPE's edge is detected with `power`; None when even `most` repeats do not reach it (the rho
    term of the corrected variance does not shrink with repeats, so some targets are out of reach
    of repeats at any number: then only a lower variance, e.g. more seeds per fold, helps)."""
    if folds < 1 or not math.isfinite(sd) or sd <= 0:
        return None
    for r in range(1, most + 1):
        if r * folds >= 2 and _reach(sd, r * folds, rho, decision, power) <= beyond:
            return r
    return None


def holm(pvalues: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holm-Bonferroni step-down: (adjusted p, the level each p was tested at), in the input order.

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m):
        adjusted p_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j)),   level of step i = 1 / (m - i + 1)
    (a p is rejected at alpha when p_(i) < alpha * level and every earlier step rejected). Controls
    the family-wise error rate (S. Holm, Scandinavian Journal of Statistics 6(2):65-70, 1979).
    NaNs (no test) are not counted in m and stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out, level = np.full(p.shape, math.nan), np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out, level
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    level[order] = 1.0 / (m - np.arange(m))
    return out, level
