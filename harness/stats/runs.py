"""Comparing two sides of several runs each: differences judged against the spread between runs.

A percentile of one run is measured with a sampling error the order statistics bound
(``harness.stats.compare``), but two runs of the same thing on a shared machine differ by
more than that: caches, neighbours, the scheduler, the minute they ran in. So a comparison
of A and B that must hold up in a release gate works on *runs* as the unit: each run gives
one value per metric (a percentile of a stage or of the client), compared on a log scale
(relative effects: a 10 % regression is the same at 2 ms and at 200 ms):

- **K >= 2 runs per side**: Welch's t on the runs' log values; the interval of the ratio
  B/A is exp(mean difference ± t * standard error). The between-run variance is estimated
  from the runs themselves, the within-run sampling error included in it.
- **one run per side**: the spread between runs cannot be estimated from two values. With a
  stored A/A calibration of this host (``RunNoise``: the standard deviation of log values
  between repeated identical runs, per metric), the interval is d ± t * sqrt(2) * sigma (t
  on the calibration's degrees of freedom, or z without them); without one, the verdict
  can only say whether a difference exceeds the noise it does not know, and says so
  ("within run-to-run noise" is never "slower").
- **a calibration and K runs** (``ratio_pooled``): the calibration is prior knowledge of the
  same variance, so it is pooled with the runs' own spread, each weighted by its degrees
  of freedom (the "moderated" t of limma, Smyth 2004): N A/A pairs give sigma with N
  degrees of freedom, K runs per side add 2 (K - 1). With K = 3 alone Welch's t has about
  4 degrees of freedom (t(0.975) = 2.78, and far more after Holm); with 10 calibration
  pairs 14 (2.14): the same data, a much narrower interval, and a run whose spread is
  small by luck no longer makes a difference look significant.

Many metrics are compared at once (names x stages x percentiles): p-values are adjusted by
Holm's step-down method so the chance of any false alarm stays at alpha. A difference counts
only when it is both significant and larger than the practical margin (``min_effect``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["VERDICTS", "RatioEstimate", "RunNoise", "holm", "holm_adjusted", "judge",
           "noise_sigma", "ratio_one_run", "ratio_paired", "ratio_pooled", "ratio_runs"]

VERDICTS = ("slower", "faster", "no significant difference", "within run-to-run noise",
            "inconclusive")


@dataclass(frozen=True)
class RatioEstimate:
    """B/A as a ratio (1.10 = B is 10 % higher), its interval, and a two-sided p-value
    for "no difference" (None when it cannot be computed)."""

    ratio: float
    low: float
    high: float
    p_value: float | None
    runs_a: int
    runs_b: int
    method: str
    df: float | None = None  # degrees of freedom of the t behind p (None: normal, or no test)


@dataclass(frozen=True)
class RunNoise:
    """Standard deviation of log(value) between identical runs on one host, per metric key
    (e.g. ``"client p99"``), from an A/A calibration; ``pairs`` is how many it rests on."""

    sigma: Mapping[str, float]
    pairs: int
    host: str = ""

    def __post_init__(self) -> None:
        if self.pairs < 2:
            raise ValueError(f"a noise calibration needs >= 2 A/A pairs (got {self.pairs})")
        for key, s in self.sigma.items():
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0):
                raise ValueError(f"noise of {key!r} must be a number >= 0 (got {s!r})")


def _logs(values: Sequence[float], side: str) -> list[float]:
    if not values:
        raise ValueError(f"side {side} needs at least one run (got none)")
    bad = [v for v in values if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v))]
    if bad:
        raise ValueError(f"values of side {side} must be finite and > 0 (got {bad[0]!r})")
    return [math.log(v) for v in values]


def _mean_var(x: list[float]) -> tuple[float, float]:
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)


def ratio_runs(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
               ) -> RatioEstimate:
    """Welch's t on log values of >= 2 runs per side (per-run percentiles, say)."""
    from scipy import stats as sps

    la, lb = _logs(a, "A"), _logs(b, "B")
    if len(la) < 2 or len(lb) < 2:
        raise ValueError(f"ratio_runs needs >= 2 runs per side (got {len(la)} and {len(lb)})")
    ma, va = _mean_var(la)
    mb, vb = _mean_var(lb)
    d = mb - ma
    se2 = va / len(la) + vb / len(lb)
    if se2 == 0.0:
        # identical runs on each side: the difference is exact
        p = 1.0 if d == 0 else 0.0
        return RatioEstimate(math.exp(d), math.exp(d), math.exp(d), p, len(la), len(lb),
                             "welch-log", None)
    df = se2 ** 2 / ((va / len(la)) ** 2 / (len(la) - 1) + (vb / len(lb)) ** 2 / (len(lb) - 1)) \
        if va > 0 or vb > 0 else float(len(la) + len(lb) - 2)
    t = float(sps.t.ppf(0.5 + confidence / 2, df))
    se = math.sqrt(se2)
    p = float(2 * sps.t.sf(abs(d) / se, df))
    return RatioEstimate(math.exp(d), math.exp(d - t * se), math.exp(d + t * se), p,
                         len(la), len(lb), "welch-log", df)


def ratio_one_run(a: float, b: float, sigma: float | None, confidence: float = 0.95,
                  df: float | None = None) -> RatioEstimate:
    """One run per side, judged against a calibrated run-to-run noise ``sigma`` (log scale);
    ``df``: the calibration's degrees of freedom (its A/A pairs), t instead of z. With
    ``sigma=None`` (no calibration) the interval is unknown: p is None."""
    from scipy import stats as sps

    if df is not None and sigma is not None:
        return ratio_pooled([a], [b], sigma, df, confidence)
    la, lb = _logs([a], "A")[0], _logs([b], "B")[0]
    d = lb - la
    if sigma is None:
        return RatioEstimate(math.exp(d), 0.0, math.inf, None, 1, 1, "uncalibrated")
    se = math.sqrt(2.0) * sigma
    if se == 0.0:
        p = 1.0 if d == 0 else 0.0
        return RatioEstimate(math.exp(d), math.exp(d), math.exp(d), p, 1, 1, "calibrated")
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = float(2 * sps.norm.sf(abs(d) / se))
    return RatioEstimate(math.exp(d), math.exp(d - z * se), math.exp(d + z * se), p, 1, 1,
                         "calibrated")


def ratio_pooled(a: Sequence[float], b: Sequence[float], prior_sigma: float, prior_df: float,
                 confidence: float = 0.95) -> RatioEstimate:
    """B/A from >= 1 run per side with a calibrated noise ``prior_sigma`` (log scale, on
    ``prior_df`` degrees of freedom) pooled with the runs' own spread:

        s^2 = (prior_df * prior_sigma^2 + SS_A + SS_B) / (prior_df + k_A - 1 + k_B - 1)

    (SS: sum of squared deviations of a side's log values from their mean), se = s *
    sqrt(1/k_A + 1/k_B), t on prior_df + k_A + k_B - 2 degrees of freedom. One run per side
    gives d +- t * sqrt(2) * sigma: the calibrated interval; ``prior_df=0`` pools the runs'
    spread alone (Student's t, for 1 run on one side and >= 2 on the other)."""
    from scipy import stats as sps

    if not (math.isfinite(prior_sigma) and prior_sigma >= 0):
        raise ValueError(f"prior_sigma must be a number >= 0 (got {prior_sigma!r})")
    if not (math.isfinite(prior_df) and prior_df >= 0):
        raise ValueError(f"prior_df must be >= 0 (got {prior_df!r})")
    la, lb = _logs(a, "A"), _logs(b, "B")
    ma, mb = sum(la) / len(la), sum(lb) / len(lb)
    ss = sum((v - ma) ** 2 for v in la) + sum((v - mb) ** 2 for v in lb)
    df = prior_df + len(la) + len(lb) - 2
    if df <= 0:
        raise ValueError(f"ratio_pooled needs a calibration (prior_df > 0) or >= 3 runs in all "
                         f"(got {len(la)} and {len(lb)} runs, prior_df {prior_df!r})")
    s2 = (prior_df * prior_sigma ** 2 + ss) / df
    d = mb - ma
    method = "calibrated" if len(la) == len(lb) == 1 else "pooled-log"
    se = math.sqrt(s2 * (1 / len(la) + 1 / len(lb)))
    if se == 0.0:
        p = 1.0 if d == 0 else 0.0
        return RatioEstimate(math.exp(d), math.exp(d), math.exp(d), p, len(la), len(lb),
                             method, df)
    t = float(sps.t.ppf(0.5 + confidence / 2, df))
    p = float(2 * sps.t.sf(abs(d) / se, df))
    return RatioEstimate(math.exp(d), math.exp(d - t * se), math.exp(d + t * se), p,
                         len(la), len(lb), method, df)


def ratio_paired(a: Sequence[float], b: Sequence[float], prior_sigma: float | None = None,
                 prior_df: float = 0, confidence: float = 0.95) -> RatioEstimate:
    """B/A from K rounds of runs made back to back, ``a[i]`` beside ``b[i]`` (``harness ab``'s
    A B, B A order): the test is on the rounds' differences d_i = ln b_i - ln a_i, so what
    drifts slowly (the machine's load over minutes) cancels within a round. A calibration
    of back-to-back A/A pairs measures exactly Var(d) = 2 sigma^2; pooled with the rounds'
    own spread (``prior_df`` weighting ``2 prior_sigma^2``):

        s_d^2 = (prior_df * 2 prior_sigma^2 + sum (d_i - mean d)^2) / (prior_df + K - 1)

    se = s_d / sqrt(K), t on prior_df + K - 1 degrees of freedom. Without a calibration
    K >= 2 rounds are needed (t on K - 1)."""
    from scipy import stats as sps

    la, lb = _logs(a, "A"), _logs(b, "B")
    if len(la) != len(lb):
        raise ValueError(f"paired runs need as many A as B (got {len(la)} and {len(lb)})")
    if prior_sigma is None:
        prior_df = 0
    elif not (math.isfinite(prior_sigma) and prior_sigma >= 0):
        raise ValueError(f"prior_sigma must be a number >= 0 (got {prior_sigma!r})")
    if not (math.isfinite(prior_df) and prior_df >= 0):
        raise ValueError(f"prior_df must be >= 0 (got {prior_df!r})")
    k = len(la)
    df = prior_df + k - 1
    if df <= 0:
        raise ValueError(f"ratio_paired needs a calibration or >= 2 rounds (got {k})")
    diffs = [y - x for x, y in zip(la, lb, strict=True)]
    d = sum(diffs) / k
    ss = sum((x - d) ** 2 for x in diffs)
    s2 = (prior_df * 2 * (prior_sigma or 0.0) ** 2 + ss) / df
    se = math.sqrt(s2 / k)
    if se == 0.0:
        p = 1.0 if d == 0 else 0.0
        return RatioEstimate(math.exp(d), math.exp(d), math.exp(d), p, k, k, "paired-log", df)
    t = float(sps.t.ppf(0.5 + confidence / 2, df))
    p = float(2 * sps.t.sf(abs(d) / se, df))
    return RatioEstimate(math.exp(d), math.exp(d - t * se), math.exp(d + t * se), p, k, k,
                         "paired-log", df)


def noise_sigma(pairs: Sequence[tuple[float, float]]) -> tuple[float, int]:
    """(sigma, degrees of freedom) of log values between identical runs, from A/A pairs:
    sigma^2 = sum(ln(b/a)^2) / (2 N). The pairs' true difference is zero, so no mean is
    subtracted and each pair is one degree of freedom: N pairs, N."""
    if len(pairs) < 1:
        raise ValueError("noise_sigma needs at least one A/A pair (got none)")
    diffs = [lb - la for la, lb in zip(_logs([p[0] for p in pairs], "A"),
                                        _logs([p[1] for p in pairs], "B"), strict=True)]
    return math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs))), len(diffs)


def holm(p_values: Sequence[float | None], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected at family-wise error ``alpha``.
    ``None`` p-values (not testable) are never rejected and do not count in the family."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha!r})")
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(order)
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(order):
        if p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def holm_adjusted(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's adjusted p-values: the smallest family-wise level at which each hypothesis is
    rejected (``adjusted <= alpha`` is the same decision as ``holm(p, alpha)``). With the
    m testable p-values in ascending order, adjusted_(i) = max over j <= i of
    min(1, (m - j + 1) p_(j)). ``None`` stays None and is not in the family."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(order)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be in [0, 1] (got {p!r})")
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def judge(est: RatioEstimate, significant: bool, min_effect: float) -> str:
    """The verdict of one comparison: a difference is reported only when significant (after
    the multiple-comparison adjustment) *and* larger than ``min_effect`` (0.05 = 5 %)."""
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0 (got {min_effect!r})")
    if est.p_value is None:
        if abs(est.ratio - 1.0) <= min_effect:
            return "within run-to-run noise"
        return "inconclusive"
    if significant and est.ratio > 1.0 + min_effect:
        return "slower"
    if significant and est.ratio < 1.0 / (1.0 + min_effect):
        return "faster"
    return "no significant difference"
