"""Statistics of study reports: hand-computed corrected t-test, Wilcoxon, Holm, verdicts, pairing."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats as st

from ablate.errors import UserError
from ablate.report.stats import (
    HIGH_FOLD_STD,
    ArmStats,
    compare_arms,
    corrected_ttest,
    holm,
    mean_ci,
    verdict,
    wilcoxon_test,
)

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# 5-fold CV: each fold trains on 4/5 and tests on 1/5 of 1000 samples.
N_TRAIN, N_TEST = 800.0, 200.0


def _t4_two_sided_p(t: float) -> float:
    """Student t with 4 df in closed form: P(|T| >= t) = 1 - (3/4) x (1 - x^2/12), x = t/sqrt(1+t^2/4)."""
    x = abs(t) / math.sqrt(1 + t * t / 4)
    return 1 - 0.75 * x * (1 - x * x / 12)


def _t4_quantile(q: float) -> float:
    """Student t with 4 df, inverse CDF in closed form (for q > 1/2)."""
    a = 4 * q * (1 - q)
    return 2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1)


def test_corrected_ttest_by_hand() -> None:
    d = [0.02, 0.03, 0.01, 0.04, 0.02]
    mean = 0.12 / 5  # 0.024
    # deviations -0.004, 0.006, -0.014, 0.016, -0.004 -> squares sum to 520e-6
    s2 = 520e-6 / 4
    se = math.sqrt((1 / 5 + 200 / 800) * s2)  # correction factor 0.45
    t = mean / se
    half = _t4_quantile(0.975) * se
    res = corrected_ttest(d, N_TRAIN, N_TEST)
    assert res.mean_diff == pytest.approx(mean, abs=1e-15)
    assert res.se == pytest.approx(se, rel=1e-12)
    assert res.t == pytest.approx(t, rel=1e-12) and t == pytest.approx(3.1379, abs=1e-4)
    assert res.p == pytest.approx(_t4_two_sided_p(t), rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-9)
    assert res.reason == ""

    # The plain paired t-test on the same differences: same mean, variance s2/n instead of 0.45*s2,
    # so its t is sqrt(0.45/0.2) = 1.5 times larger and its p smaller (too optimistic for CV).
    base = np.array([0.70, 0.72, 0.68, 0.71, 0.69])
    plain = st.ttest_rel(base + np.array(d), base)
    assert plain.statistic == pytest.approx(1.5 * res.t, rel=1e-6)
    assert plain.pvalue < res.p / 3  # about 0.0093 against 0.0349


def test_corrected_ttest_correction_grows_with_test_fraction() -> None:
    d = [0.02, 0.03, 0.01, 0.04, 0.02, 0.05, 0.0, 0.03]
    p_10fold = corrected_ttest(d, 900, 100).p
    p_3fold = corrected_ttest(d, 2, 1).p  # n_test/n_train = 1/2
    assert p_10fold < p_3fold


def test_corrected_ttest_edge_cases_are_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none = corrected_ttest([], N_TRAIN, N_TEST)
        one = corrected_ttest([0.03], N_TRAIN, N_TEST)
        zeros = corrected_ttest([0.0] * 4, N_TRAIN, N_TEST)
        # 0.4-0.3 and 0.7-0.6 differ from 0.1 in the last bits, and even np.var([0.1] * 3) is
        # 2e-34, not 0; still "the same difference on every pair"
        same = corrected_ttest([0.4 - 0.3, 0.1, 0.7 - 0.6], N_TRAIN, N_TEST)
        neg = corrected_ttest([-0.01] * 3, N_TRAIN, N_TEST)
    assert math.isnan(none.mean_diff) and math.isnan(none.p) and "no pairs" in none.reason
    assert one.mean_diff == 0.03 and math.isnan(one.p) and math.isnan(one.ci_low) and "1 pair" in one.reason
    assert (zeros.t, zeros.p, zeros.ci_low, zeros.ci_high) == (0.0, 1.0, 0.0, 0.0)
    assert same.p == 0.0 and same.t == math.inf and same.ci_low == same.ci_high == 0.1
    assert "zero variance" in same.reason
    assert neg.p == 0.0 and neg.t == -math.inf and neg.mean_diff == -0.01
    with pytest.raises(ValueError):
        corrected_ttest([0.1, 0.2], 0, 10)


@pytest.mark.parametrize("n", range(6))
def test_wilcoxon_needs_six_pairs(n: int) -> None:
    res = wilcoxon_test([0.01 * (i + 1) for i in range(n)])
    assert math.isnan(res.p) and f"only {n} pairs" in res.reason


def test_wilcoxon_matches_scipy_and_hand_values() -> None:
    d = np.array([0.031, -0.012, 0.044, 0.027, 0.005, -0.021, 0.038, 0.016, 0.052, -0.003])
    res = wilcoxon_test(d)
    assert res.p == pytest.approx(st.wilcoxon(d).pvalue, rel=1e-12) and res.reason == ""
    assert res.p < 0.1
    # 6 pairs, all positive: only 2 of the 2**6 sign patterns are as extreme -> p = 2/64
    assert wilcoxon_test([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]).p == pytest.approx(2 / 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zeros = wilcoxon_test([0.0] * 8)
    assert zeros.p == 1.0


def test_wilcoxon_keeps_ties_in_the_ranking() -> None:
    """zero_method zsplit on 20 pairs (normal approximation): 10 ties and 10 gains, by hand."""
    d = [0.0] * 10 + [0.01 * (i + 1) for i in range(10)]
    # ties hold ranks 1..10 split evenly: R+ = (11 + ... + 20) + 55/2 = 182.5; null mean 20*21/4 = 105;
    # variance 20*21*41/24 - (10^3 - 10)/48 (tie correction for the ten tied zeros) = 696.875
    z = (182.5 - 105) / math.sqrt(696.875)
    assert wilcoxon_test(d).p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)
    # dropping the ties ("wilcox") would test 10 pairs: R+ = 55, mean 27.5, var 10*11*21/24
    z_dropped = (55 - 27.5) / math.sqrt(10 * 11 * 21 / 24)
    assert wilcoxon_test(d).p != pytest.approx(math.erfc(z_dropped / math.sqrt(2)), rel=1e-3)


def test_holm_hand_example() -> None:
    # non-NaN m = 3; sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    out = holm([0.01, 0.04, 0.03, math.nan])
    np.testing.assert_allclose(out[:3], [0.03, 0.06, 0.06], rtol=1e-12)
    assert math.isnan(out[3])
    # capped at 1 and monotone: sorted 0.2, 0.5, 0.6 -> 0.6, min(1, 1.0), max(1.0, 0.6)
    np.testing.assert_allclose(holm([0.5, 0.6, math.nan, 0.2]), [1.0, 1.0, math.nan, 0.6], rtol=1e-12)
    assert holm([0.04]).tolist() == [0.04]
    assert holm([]).size == 0 and np.isnan(holm([math.nan, math.nan])).all()


@pytest.mark.parametrize(
    ("args", "rope", "expected"),
    [
        ((0.03, 0.01, 0.05, 0.001), None, "better"),
        ((-0.03, -0.05, -0.01, 0.001), None, "worse"),
        ((0.01, -0.01, 0.03, 0.2), None, "no detectable difference"),
        ((0.001, -0.004, 0.006, 0.6), (-0.01, 0.01), "equivalent"),
        ((0.001, -0.004, 0.016, 0.6), (-0.01, 0.01), "no detectable difference"),
        ((0.03, math.nan, math.nan, math.nan), None, "too few pairs"),
    ],
)
def test_verdict_table(
    args: tuple[float, float, float, float], rope: tuple[float, float] | None, expected: str
) -> None:
    assert verdict(*args, alpha=0.05, rope=rope) == expected


def _study(seed: int = 0) -> dict[str, list[float | None]]:
    rng = np.random.default_rng(seed)
    base = 0.70 + rng.normal(0, 0.02, 10)  # 5 folds x 2 seeds
    return {
        "base": base.tolist(),
        "plus": (base + 0.05 + rng.normal(0, 0.005, 10)).tolist(),
        "minus": (base - 0.05 + rng.normal(0, 0.005, 10)).tolist(),
        "same": base.tolist(),
        "noise": (base + rng.normal(0, 0.01, 10)).tolist(),  # null: independent noise of mean zero
    }


def test_compare_arms_planted_and_null() -> None:
    rows = compare_arms(_study(), "base", N_TRAIN, N_TEST)
    by = {r.arm: r for r in rows}
    assert [r.arm for r in rows] == ["base", "plus", "minus", "same", "noise"]
    assert by["base"].verdict == "baseline" and by["base"].diff == 0.0 and math.isnan(by["base"].p_corrected)
    assert by["plus"].verdict == "better" and by["plus"].diff == pytest.approx(0.05, abs=0.005)
    assert by["minus"].verdict == "worse" and by["minus"].diff == pytest.approx(-0.05, abs=0.005)
    for name in ("same", "noise"):
        assert by[name].verdict == "no detectable difference", by[name]
    assert by["same"].p_corrected == 1.0 and by["same"].p_wilcoxon == 1.0
    assert all(r.n == r.n_pairs == 10 for r in rows)
    assert by["same"].warnings == ["identical scores on every pair: p set to 1"]
    assert all(r.warnings == [] for r in rows if r.arm != "same")
    # Holm across the 4 non-baseline arms, per test; adjusted >= raw
    others = rows[1:]
    np.testing.assert_allclose([r.p_corrected_holm for r in others], holm([r.p_corrected for r in others]))
    np.testing.assert_allclose([r.p_wilcoxon_holm for r in others], holm([r.p_wilcoxon for r in others]))
    assert by["plus"].p_corrected_holm > by["plus"].p_corrected


def test_null_rejection_rate_is_at_most_alpha() -> None:
    """Independent zero-mean noise (10 pairs, 5-fold sizes): neither test calls it often."""
    rng = np.random.default_rng(1)
    sims = [rng.normal(0, 0.01, 10) for _ in range(200)]
    corrected = np.mean([corrected_ttest(d, N_TRAIN, N_TEST).p < 0.05 for d in sims])
    wilcox = np.mean([wilcoxon_test(d).p < 0.05 for d in sims])
    plain = np.mean([st.ttest_1samp(d, 0).pvalue < 0.05 for d in sims])
    assert corrected <= 0.05 and corrected < plain
    assert wilcox <= 0.09  # exact test at level 0.05 plus sampling slack of 200 runs


def test_rope_equivalent() -> None:
    base = [0.70, 0.72, 0.68, 0.71, 0.69, 0.73, 0.70, 0.66, 0.71, 0.72]
    d = [0.002, -0.001, 0.001, -0.002, 0.0, 0.001, -0.001, 0.002, -0.002, 0.0]  # mean 0
    scores = {"base": base, "twin": [b + x for b, x in zip(base, d, strict=True)]}
    # CI half width: t_{9,.975} * sqrt(0.1 + 0.25) * sqrt(20e-6/9) = 2.262 * 0.5916 * 0.00149 ~ 0.0020
    wide = compare_arms(scores, "base", N_TRAIN, N_TEST, rope=(-0.01, 0.01))[1]
    narrow = compare_arms(scores, "base", N_TRAIN, N_TEST, rope=(-0.001, 0.001))[1]
    plain = compare_arms(scores, "base", N_TRAIN, N_TEST)[1]
    assert wide.diff_high == pytest.approx(2.2622 * math.sqrt(0.35) * math.sqrt(20e-6 / 9), rel=1e-3)
    assert wide.verdict == "equivalent"
    assert narrow.verdict == plain.verdict == "no detectable difference"


def test_missing_entries_pair_by_index() -> None:
    scores: dict[str, list[float | None]] = {
        "base": [0.70, 0.72, None, 0.68, 0.71, 0.69],
        "arm": [None, 0.75, 0.74, 0.70, 0.75],  # shorter: index 5 missing too
    }
    base, arm = compare_arms(scores, "base", N_TRAIN, N_TEST)
    # common indices 1, 3, 4 -> differences 0.03, 0.02, 0.04 (zipping the present values would
    # pair wrong splits: 0.05, 0.02, 0.02, 0.04)
    assert (base.n, arm.n, arm.n_pairs) == (5, 4, 3)
    assert arm.diff == pytest.approx(0.03, abs=1e-12)
    assert arm.p_corrected == pytest.approx(corrected_ttest([0.03, 0.02, 0.04], N_TRAIN, N_TEST).p, rel=1e-9)
    assert math.isnan(arm.p_wilcoxon)
    assert arm.warnings == [
        "2 of 6 runs missing (pruned or failed folds)",
        "only 3 pairs: the Wilcoxon test needs at least 6",
    ]
    assert base.warnings == ["1 of 6 runs missing (pruned or failed folds)"]
    # NaN means missing as well
    scores["arm"] = [math.nan, 0.75, 0.74, 0.70, 0.75, math.nan]
    nan_arm = compare_arms(scores, "base", N_TRAIN, N_TEST)
    assert nan_arm[1].n_pairs == 3 and nan_arm[1].diff == pytest.approx(0.03, abs=1e-12)


def test_too_few_pairs_is_left_out_of_holm() -> None:
    study = _study()
    scores = {"base": study["base"], "plus": study["plus"], "lonely": [None] * 9 + [0.9]}
    rows = {r.arm: r for r in compare_arms(scores, "base", N_TRAIN, N_TEST)}
    assert rows["lonely"].verdict == "too few pairs" and rows["lonely"].n_pairs == 1
    assert rows["lonely"].warnings[-1] == "only 1 pair: the t-test needs at least 2"
    assert math.isnan(rows["lonely"].p_corrected_holm)
    assert rows["plus"].p_corrected_holm == rows["plus"].p_corrected  # m = 1, not 2


def test_high_fold_variance_warning() -> None:
    rows = compare_arms({"base": [0.7] * 6, "wild": [0.5, 0.8] * 3}, "base", N_TRAIN, N_TEST)
    std = float(np.std([0.5, 0.8] * 3, ddof=1))  # 0.164
    assert std > HIGH_FOLD_STD
    assert rows[1].warnings == [f"high fold variance: std {std:.2f} across folds (above {HIGH_FOLD_STD:.2f})"]
    assert rows[0].warnings == []


def test_json_and_errors() -> None:
    rows = compare_arms(_study(), "base", N_TRAIN, N_TEST)
    text = json.dumps([r.to_json() for r in rows], allow_nan=False)
    back = json.loads(text)
    assert back[0]["p_corrected"] is None and back[0]["verdict"] == "baseline"
    assert back[1]["p_corrected"] == rows[1].p_corrected
    assert set(back[0]) == set(ArmStats.__dataclass_fields__)
    only = compare_arms({"base": [0.7, None]}, "base", N_TRAIN, N_TEST)
    assert len(only) == 1 and only[0].warnings == ["1 of 2 runs missing (pruned or failed folds)"]
    with pytest.raises(UserError, match="unknown baseline arm 'bsae'.*known: base, minus"):
        compare_arms(_study(), "bsae", N_TRAIN, N_TEST)
    with pytest.raises(UserError, match="rope"):
        compare_arms(_study(), "base", N_TRAIN, N_TEST, rope=(0.01, -0.01))
    with pytest.raises(UserError, match="alpha"):
        compare_arms(_study(), "base", N_TRAIN, N_TEST, alpha=1.5)


def test_mean_ci_by_hand() -> None:
    # [0.7, 0.8, 0.9]: mean 0.8, s = 0.1; t_{2,.975} = 0.95 / sqrt(2 * 0.975 * 0.025) (closed form, 2 df)
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * 0.1 / math.sqrt(3)
    assert mean_ci([0.7, None, 0.8, 0.9]) == pytest.approx((0.8, 0.8 - half, 0.8 + half), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty, one, flat = mean_ci([]), mean_ci([0.5, math.nan]), mean_ci([0.6, 0.6])
    assert all(math.isnan(v) for v in empty)
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])
    assert flat == pytest.approx((0.6, 0.6, 0.6))
