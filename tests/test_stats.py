"""Statistics of study reports: hand-computed posteriors and decisions, Holm, power, the design's units."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from ablate.errors import UserError
from ablate.report.stats import (
    DECISION,
    DEFAULT_ROPE,
    decide,
    detectable,
    holm,
    mean_ci,
    posterior,
    repeats_needed,
)
from ablate.report.verdicts import HIGH_FOLD_STD, ArmStats, Design, compare_arms, units_of

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

RHO = 200.0 / 800.0  # 5-fold CV: each fold trains on 4/5 and tests on 1/5
FIVE = Design(1, 1, 5)


def _t4_cdf(t: float) -> float:
    """Student t with 4 df in closed form: P(T <= t) = 1/2 + (3/8) x (1 - x^2/12) with x = t/sqrt(1+t^2/4)
    (from P(|T| <= t) = (3/4) x (1 - x^2/12))."""
    x = t / math.sqrt(1 + t * t / 4)
    return 0.5 + 0.375 * x * (1 - x * x / 12)


def _t4_quantile(q: float) -> float:
    """Student t with 4 df, inverse CDF in closed form (for q > 1/2)."""
    a = 4 * q * (1 - q)
    return 2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1)


def test_posterior_by_hand() -> None:
    d = [0.02, 0.03, 0.01, 0.04, 0.02]
    mean = 0.12 / 5  # 0.024
    # deviations -0.004, 0.006, -0.014, 0.016, -0.004 -> squares sum to 520e-6
    s2 = 520e-6 / 4
    se = math.sqrt((1 / 5 + 0.25) * s2)  # correction factor 0.45
    post = posterior(d, RHO, (-0.005, 0.005))
    assert post.mean == pytest.approx(mean, abs=1e-15) and post.df == 4
    assert post.se == pytest.approx(se, rel=1e-12) and post.sd == pytest.approx(math.sqrt(s2), rel=1e-12)
    assert post.p_better == pytest.approx(1 - _t4_cdf((0.005 - mean) / se), rel=1e-9)
    assert post.p_worse == pytest.approx(_t4_cdf((-0.005 - mean) / se), rel=1e-9)
    assert post.p_better + post.p_worse + post.p_equivalent == pytest.approx(1.0, abs=1e-12)
    half = _t4_quantile(0.975) * se
    assert (post.low, post.high) == pytest.approx((mean - half, mean + half), rel=1e-9)
    assert post.p_two_sided == pytest.approx(2 * (1 - _t4_cdf(mean / se)), rel=1e-9)
    # P(better) = 0.9660 here: below the 0.975 threshold, so undecided although p = 0.035 < 0.05
    assert post.p_better == pytest.approx(0.9660, abs=1e-4) and post.p_two_sided < 0.05
    assert decide(post) == "undecided"
    # the plain paired t-test uses s2/n: its t is sqrt(0.45/0.2) = 1.5 times the corrected one
    base = np.array([0.70, 0.72, 0.68, 0.71, 0.69])
    plain = st.ttest_rel(base + np.array(d), base)
    assert plain.statistic == pytest.approx(1.5 * mean / se, rel=1e-6)


def test_zero_width_rope_is_the_two_sided_corrected_t_test() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        d = rng.normal(0.01, 0.01, 5)
        post = posterior(d, RHO, (0.0, 1e-300))
        assert (decide(post) in ("better", "worse")) == (post.p_two_sided < 0.05)


def test_interval_inside_the_rope_with_tiny_p_is_equivalent() -> None:
    d = [0.002, 0.0021, 0.0019, 0.002, 0.0021, 0.0019, 0.002, 0.002, 0.0021, 0.0019]
    post = posterior(d, RHO, DEFAULT_ROPE)
    assert post.p_two_sided < 1e-6  # certainly not zero ...
    assert DEFAULT_ROPE[0] < post.low and post.high < DEFAULT_ROPE[1]  # ... but certainly inside the ROPE
    assert post.p_equivalent > DECISION and decide(post) == "equivalent"


@pytest.mark.parametrize(("d", "why"), [
    ([0.03], "1 paired unit"),
    ([], "0 paired unit"),
    ([0.02, 0.02, 0.02, 0.02, 0.02], "zero variance"),
    ([0.0, 0.0, 0.0], "zero variance"),
])
def test_no_posterior_is_incomplete(d: list[float], why: str) -> None:
    post = posterior(d, RHO)
    assert why in post.reason and math.isnan(post.p_better) and decide(post) == "incomplete"


def test_rounding_keeps_real_ties_exact() -> None:
    # 0.3 - 0.1 and 0.5 - 0.3 differ in the last bit; rounded they tie: zero variance, not an absurd t
    assert "zero variance" in posterior([0.3 - 0.1, 0.5 - 0.3, 0.7 - 0.5], RHO).reason


def test_holm_hand_example() -> None:
    # non-NaN m = 3; sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    out, level = holm([0.01, 0.04, 0.03, math.nan])
    np.testing.assert_allclose(out[:3], [0.03, 0.06, 0.06], rtol=1e-12)
    np.testing.assert_allclose(level[:3], [1 / 3, 1.0, 1 / 2], rtol=1e-12)
    assert math.isnan(out[3]) and math.isnan(level[3])
    np.testing.assert_allclose(holm([0.5, 0.6, math.nan, 0.2])[0], [1.0, 1.0, math.nan, 0.6], rtol=1e-12)
    assert holm([])[0].size == 0 and np.isnan(holm([math.nan, math.nan])[0]).all()


def test_detectable_difference_by_hand_and_by_simulation() -> None:
    sd, n = 0.01, 5
    se = math.sqrt((1 / n + RHO) * sd * sd)
    want = 0.005 + (st.t.ppf(0.975, 4) + st.t.ppf(0.8, 4)) * se
    assert detectable(sd, n, RHO) == pytest.approx(want, rel=1e-12)
    assert math.isnan(detectable(0.0, n, RHO)) and math.isnan(detectable(sd, 1, RHO))
    # a true difference at the detectable size is called better in roughly 80% of simulated studies
    rng = np.random.default_rng(0)
    calls = [decide(posterior(rng.normal(want, sd, n), RHO)) == "better" for _ in range(4000)]
    assert 0.70 < np.mean(calls) < 0.90  # the t approximation of the power is rough at 4 df


def test_repeats_needed() -> None:
    sd = 0.003  # the limit with endless repeats: (1.96 + 0.84) * sqrt(0.25) * 0.003 = 0.0042 < 0.005
    r = repeats_needed(sd, 5, RHO, 0.005)
    assert r is not None and r >= 1
    se = lambda k: math.sqrt((1 / (k * 5) + RHO)) * sd  # noqa: E731
    reach = lambda k: (st.t.ppf(0.975, 5 * k - 1) + st.t.ppf(0.8, 5 * k - 1)) * se(k)  # noqa: E731
    assert reach(r) <= 0.005 and (r == 1 or reach(r - 1) > 0.005)
    # the rho term does not shrink with repeats: a noisy design never gets there
    assert repeats_needed(0.05, 5, RHO, 0.005) is None


def test_units_average_seeds_and_need_every_seed() -> None:
    d = Design(repeats=2, seeds=2, folds=3)
    slots = list(range(12))  # slot (r*2 + s)*3 + k
    u = units_of([float(v) for v in slots], d)
    # repeat 0, fold 0: slots 0 and 3 -> 1.5; repeat 1, fold 2: slots 8 and 11 -> 9.5
    np.testing.assert_allclose(u, [1.5, 2.5, 3.5, 7.5, 8.5, 9.5])
    slots[3] = None  # type: ignore[call-overload]
    assert math.isnan(units_of(slots, d)[0]) and np.isfinite(units_of(slots, d)[1:]).all()
    assert d.place(8) == (1, 0, 2) and d.label(8) == "repeat 1 fold 2 seed 0"
    assert Design(1, 2, 5).label(7) == "fold 2 seed 1"


def _study(seed: int = 0) -> dict[str, list[float | None]]:
    rng = np.random.default_rng(seed)
    base = 0.70 + rng.normal(0, 0.02, 10)  # 2 repeats x 5 folds
    return {
        "base": base.tolist(),
        "plus": (base + 0.05 + rng.normal(0, 0.005, 10)).tolist(),
        "minus": (base - 0.05 + rng.normal(0, 0.005, 10)).tolist(),
        "same": base.tolist(),
        "noise": (base + rng.normal(0, 0.01, 10)).tolist(),
    }


def test_compare_arms_planted_null_and_identical() -> None:
    rows = compare_arms(_study(), "base", Design(2, 1, 5), RHO)
    by = {r.arm: r for r in rows}
    assert [r.arm for r in rows] == ["base", "plus", "minus", "same", "noise"]
    assert by["base"].verdict == "baseline" and by["base"].diff == 0.0
    assert by["plus"].verdict == "better" and by["plus"].p_better > DECISION
    assert by["minus"].verdict == "worse" and by["minus"].p_worse > DECISION
    assert by["noise"].verdict == "undecided"
    assert by["same"].verdict == "incomplete" and "zero variance" in by["same"].warnings[0]
    assert all(r.n == r.n_pairs == r.n_units == 10 for r in rows)
    # Holm details over the arms that have a test ("same" has none); each interval at its step's level
    tested = [by[a] for a in ("plus", "minus", "noise")]
    adjusted, level = holm([r.p_corrected for r in tested])
    np.testing.assert_allclose([r.p_corrected_holm for r in tested], adjusted)
    for r, lv in zip(tested, level, strict=True):
        assert r.holm_confidence == pytest.approx(1 - 0.05 * lv)
        assert (r.holm_low > 0 or r.holm_high < 0) == (r.p_corrected < 0.05 * lv)
    assert math.isnan(by["same"].p_corrected_holm)


def test_pruned_or_partial_arm_is_incomplete() -> None:
    scores = _study()
    scores["plus"][7] = None
    rows = {r.arm: r for r in compare_arms(scores, "base", Design(2, 1, 5), RHO,
                                           complete={"minus": False})}
    assert rows["plus"].verdict == "incomplete" and rows["plus"].n_units == 9
    assert any("9 of 10 units" in w for w in rows["plus"].warnings)
    assert rows["minus"].verdict == "incomplete"  # all its scores, but its trial did not complete
    assert math.isnan(rows["plus"].p_corrected_holm) and math.isnan(rows["minus"].p_corrected_holm)
    assert rows["noise"].verdict == "undecided"


def test_incomplete_baseline_gives_no_verdicts() -> None:
    scores = _study()
    scores["base"][0] = None
    rows = compare_arms(scores, "base", Design(2, 1, 5), RHO)
    assert [r.verdict for r in rows[1:]] == ["incomplete"] * 4
    assert any("baseline lacks" in w for w in rows[0].warnings)


def test_high_fold_variance_warning() -> None:
    scores = {"base": [0.7, 0.72, 0.71, 0.69, 0.70], "wild": [0.9, 0.3, 0.8, 0.2, 0.7]}
    rows = compare_arms(scores, "base", FIVE, RHO)
    assert any("high fold variance" in w for w in rows[1].warnings) and HIGH_FOLD_STD == 0.10
    assert not any("high fold variance" in w for w in rows[0].warnings)


def test_json_and_errors() -> None:
    rows = compare_arms(_study(), "base", Design(2, 1, 5), RHO)
    text = json.dumps([r.to_json() for r in rows], allow_nan=False)
    back = json.loads(text)
    assert back[0]["p_better"] is None and isinstance(back[1]["p_better"], float)
    assert set(ArmStats.__dataclass_fields__) == set(back[0])
    with pytest.raises(UserError, match="baseline arm"):
        compare_arms(_study(), "nope", Design(2, 1, 5), RHO)
    for bad in ((0.01, 0.02), (-0.01, -0.02), (0.0, 0.0)):
        with pytest.raises(UserError, match="rope"):
            compare_arms(_study(), "base", Design(2, 1, 5), RHO, rope=bad)


def test_mean_ci_by_hand() -> None:
    mean, low, high = mean_ci([0.6, 0.7, 0.8])
    half = st.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((0.7, 0.7 - half, 0.7 + half))
    assert math.isnan(mean_ci([0.5])[1]) and math.isnan(mean_ci([])[0])
