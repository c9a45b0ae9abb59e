"""harness.stats.runs by value: Welch on log values, the calibrated one-run interval, Holm."""

from __future__ import annotations

import math

import pytest

from harness.stats.runs import RunNoise, holm, judge, noise_sigma, ratio_one_run, ratio_runs


def test_welch_on_logs_by_hand() -> None:
    # log A = [0, .1], log B = [.2, .3]: d = .2, se^2 = .005/2 + .005/2 = .005, df = 2
    est = ratio_runs([1.0, math.exp(0.1)], [math.exp(0.2), math.exp(0.3)])
    t = 4.302653  # t(0.975, 2), from the table
    se = math.sqrt(0.005)
    assert est.ratio == pytest.approx(math.exp(0.2), rel=1e-12)
    assert est.low == pytest.approx(math.exp(0.2 - t * se), rel=1e-6)
    assert est.high == pytest.approx(math.exp(0.2 + t * se), rel=1e-6)
    # two-sided p for t = .2 / se = 2.828427 with 2 df: sf = (1 - t / sqrt(t^2 + 2)) / 2
    tt = 0.2 / se
    assert est.p_value == pytest.approx(1 - tt / math.sqrt(tt ** 2 + 2), rel=1e-9)
    assert (est.runs_a, est.runs_b, est.method) == (2, 2, "welch-log")


def test_identical_runs_give_an_exact_ratio() -> None:
    est = ratio_runs([2.0, 2.0, 2.0], [3.0, 3.0])
    assert (est.ratio, est.low, est.high, est.p_value) == pytest.approx((1.5, 1.5, 1.5, 0.0))
    same = ratio_runs([2.0, 2.0], [2.0, 2.0])
    assert (same.ratio, same.p_value) == (1.0, 1.0)


def test_one_run_against_calibrated_noise_by_hand() -> None:
    est = ratio_one_run(100.0, 110.0, sigma=0.05)
    d, se, z = math.log(1.1), math.sqrt(2) * 0.05, 1.959964
    assert est.low == pytest.approx(math.exp(d - z * se), rel=1e-6)
    assert est.high == pytest.approx(math.exp(d + z * se), rel=1e-6)
    assert est.p_value == pytest.approx(0.17769, abs=2e-5)  # 2 * (1 - Phi(1.347892))
    unknown = ratio_one_run(100.0, 110.0, sigma=None)
    assert (unknown.p_value, unknown.low, unknown.high) == (None, 0.0, math.inf)


def test_holm_step_down() -> None:
    # sorted: .01 <= .05/3 rejected; .03 > .05/2 stops; None is not in the family
    assert holm([0.01, 0.04, 0.03, None]) == [True, False, False, False]
    assert holm([0.01, 0.02, None]) == [True, True, False]  # .01 <= .025, .02 <= .05
    assert holm([]) == []
    with pytest.raises(ValueError, match="alpha must be in"):
        holm([0.1], alpha=1.0)


@pytest.mark.parametrize(("ratio", "p", "significant", "verdict"), [
    (1.20, 0.001, True, "slower"),
    (1.03, 0.001, True, "no significant difference"),   # significant but under the margin
    (0.80, 0.001, True, "faster"),
    (1.20, 0.20, False, "no significant difference"),
    (1.03, None, False, "within run-to-run noise"),
    (1.20, None, False, "inconclusive"),
])
def test_judge(ratio: float, p: float | None, significant: bool, verdict: str) -> None:
    from harness.stats.runs import RatioEstimate

    est = RatioEstimate(ratio, ratio, ratio, p, 1, 1, "x")
    assert judge(est, significant, 0.05) == verdict


def test_bad_inputs_name_the_rule_and_value() -> None:
    with pytest.raises(ValueError, match=r"values of side A must be finite and > 0 \(got 0\)"):
        ratio_runs([0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"needs >= 2 runs per side \(got 1 and 2\)"):
        ratio_runs([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"needs >= 2 A/A pairs \(got 1\)"):
        RunNoise({"client p99": 0.05}, pairs=1)
    with pytest.raises(ValueError, match="noise of 'client p99' must be a number >= 0"):
        RunNoise({"client p99": -1.0}, pairs=5)


# -- the pooled (calibrated) and paired estimates, the noise, Holm's adjusted p ----------------
def _t_sf_two_sided(t: float, df: float) -> float:
    """2 P(T > |t|) for Student's t through the regularized incomplete beta function."""
    from scipy.special import betainc

    return float(betainc(df / 2, 0.5, df / (df + t * t)))


def test_pooled_with_a_calibration_by_hand() -> None:
    from harness.stats.runs import ratio_pooled

    # log A = [0, .1], log B = [.2, .3]; SS = 4 * .05^2 = .01; prior .1 on 10 df:
    # s^2 = (10 * .01 + .01) / 12; se = sqrt(s^2 (1/2 + 1/2)); t(.975, 12) = 2.178813
    est = ratio_pooled([1.0, math.exp(0.1)], [math.exp(0.2), math.exp(0.3)], 0.1, 10)
    se = math.sqrt(0.11 / 12)
    assert est.df == 12 and est.method == "pooled-log"
    assert est.low == pytest.approx(math.exp(0.2 - 2.178813 * se), rel=1e-6)
    assert est.high == pytest.approx(math.exp(0.2 + 2.178813 * se), rel=1e-6)
    assert est.p_value == pytest.approx(_t_sf_two_sided(0.2 / se, 12), rel=1e-9)
    # One run per side: d +- t(.975, 10) sqrt(2) sigma, the same as ratio_one_run with df
    one = ratio_pooled([100.0], [110.0], 0.05, 10)
    assert (one.method, one.df) == ("calibrated", 10)
    assert one.high == pytest.approx(1.1 * math.exp(2.228139 * math.sqrt(2) * 0.05), rel=1e-6)
    assert ratio_one_run(100.0, 110.0, 0.05, df=10) == one
    # No calibration: the runs' spread alone, 1 + 2 runs = 1 df
    student = ratio_pooled([1.0], [math.exp(0.2), math.exp(0.3)], 0.0, 0)
    assert student.df == 1
    with pytest.raises(ValueError, match=r"needs a calibration \(prior_df > 0\) or >= 3 runs"):
        ratio_pooled([1.0], [2.0], 0.1, 0)


def test_paired_rounds_by_hand() -> None:
    from harness.stats.runs import ratio_paired, ratio_pooled

    # d = [.1, .2, .3]: mean .2, SS .02
    a, b = [1.0, 1.0, 1.0], [math.exp(0.1), math.exp(0.2), math.exp(0.3)]
    alone = ratio_paired(a, b)
    se = math.sqrt(0.01 / 3)  # s_d^2 = .02 / 2
    assert alone.df == 2 and alone.ratio == pytest.approx(math.exp(0.2))
    assert alone.low == pytest.approx(math.exp(0.2 - 4.302653 * se), rel=1e-6)
    assert alone.p_value == pytest.approx(_t_sf_two_sided(0.2 / se, 2), rel=1e-9)
    # with a calibration of .05 on 10 pairs: s_d^2 = (10 * 2 * .05^2 + .02) / 12
    cal = ratio_paired(a, b, 0.05, 10)
    se = math.sqrt((10 * 2 * 0.0025 + 0.02) / 12 / 3)
    assert cal.df == 12
    assert cal.high == pytest.approx(math.exp(0.2 + 2.178813 * se), rel=1e-6)
    # one round is the calibrated one-run interval
    one = ratio_paired([100.0], [110.0], 0.05, 10)
    assert (one.low, one.high, one.p_value) == pytest.approx(
        (lambda e: (e.low, e.high, e.p_value))(ratio_pooled([100.0], [110.0], 0.05, 10)))
    with pytest.raises(ValueError, match=r"as many A as B \(got 2 and 1\)"):
        ratio_paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"needs a calibration or >= 2 rounds \(got 1\)"):
        ratio_paired([1.0], [2.0])


def test_noise_sigma_and_holm_adjusted_by_hand() -> None:
    from harness.stats.runs import holm_adjusted, noise_sigma

    # ln(b/a) = .1, -.1, 0: sigma^2 = (.01 + .01) / (2 * 3)
    sigma, df = noise_sigma([(1.0, math.exp(0.1)), (1.0, math.exp(-0.1)), (2.0, 2.0)])
    assert (sigma, df) == (pytest.approx(math.sqrt(0.02 / 6)), 3)
    with pytest.raises(ValueError, match="at least one A/A pair"):
        noise_sigma([])
    # sorted .01 (x3 = .03), .03 (x2 = .06), .04 (x1, but never below .06)
    assert holm_adjusted([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm_adjusted([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    for p in ([0.01, 0.04, 0.03, None], [0.001, 0.2, 0.012, 0.04]):
        adjusted = holm_adjusted(p)
        assert [a is not None and a <= 0.05 for a in adjusted] == holm(p, 0.05)
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        holm_adjusted([1.5])


def test_paired_with_calibration_keeps_its_error_rates_under_drift() -> None:
    """Simulation: the machine drifts between rounds (sd .2 in log) and each run adds .05 of
    its own; runs of a round share the drift. 10 calibration pairs, K = 3 rounds: false
    alarms about alpha (5 %), a 15 % slowdown's interval covers the truth ~95 % of the time
    and finds it ~88 % of the time (before Holm), while the unpaired Welch test drowns in
    the drift."""
    import numpy as np

    from harness.stats.runs import ratio_paired

    rng = np.random.default_rng(17)
    alarms = covered = found = welch_found = 0
    trials = 600
    for _ in range(trials):
        cal = [(math.exp(r + rng.normal(0, 0.05)), math.exp(r + rng.normal(0, 0.05)))
               for r in rng.normal(0, 0.2, 10)]
        sigma, df = noise_sigma(cal)
        drift = rng.normal(0, 0.2, 3)
        a = [math.exp(r + rng.normal(0, 0.05)) for r in drift]
        b = [math.exp(r + rng.normal(0, 0.05)) for r in drift]
        slow = [x * 1.15 for x in b]
        alarms += ratio_paired(a, b, sigma, df).p_value < 0.05
        est = ratio_paired(a, slow, sigma, df)
        covered += est.low <= 1.15 <= est.high
        found += est.p_value < 0.05
        welch_found += ratio_runs(a, slow).p_value < 0.05
    assert alarms / trials == pytest.approx(0.05, abs=0.025)
    assert covered / trials == pytest.approx(0.95, abs=0.025)
    assert found / trials > 0.8  # d / se = .14 / .041: about 0.88 expected at alpha .05
    assert welch_found / trials < 0.3
