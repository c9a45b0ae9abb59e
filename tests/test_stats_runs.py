"""harness.stats.runs by value: Welch on log values, the calibrated one-run interval, Holm."""

from __future__ import annotations

import math

import pytest

from harness.stats.runs import RunNoise, holm, judge, ratio_one_run, ratio_runs


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
