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
  between repeated identical runs, per metric), the interval is d ± z * sqrt(2) * sigma;
  without one, the verdict can only say whether a difference exceeds the noise it does not
  know, and says so ("within run-to-run noise" is never "slower").

Many metrics are compared at once (names x stages x percentiles): p-values are adjusted by
Holm's step-down method so the chance of any false alarm stays at alpha. A difference counts
only when it is both significant and larger than the practical margin (``min_effect``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["VERDICTS", "RatioEstimate", "RunNoise", "holm", "judge", "ratio_one_run",
           "ratio_runs"]

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
                             "welch-log")
    df = se2 ** 2 / ((va / len(la)) ** 2 / (len(la) - 1) + (vb / len(lb)) ** 2 / (len(lb) - 1)) \
        if va > 0 or vb > 0 else float(len(la) + len(lb) - 2)
    t = float(sps.t.ppf(0.5 + confidence / 2, df))
    se = math.sqrt(se2)
    p = float(2 * sps.t.sf(abs(d) / se, df))
    return RatioEstimate(math.exp(d), math.exp(d - t * se), math.exp(d + t * se), p,
                         len(la), len(lb), "welch-log")


def ratio_one_run(a: float, b: float, sigma: float | None, confidence: float = 0.95
                  ) -> RatioEstimate:
    """One run per side, judged against a calibrated run-to-run noise ``sigma`` (log scale);
    with ``sigma=None`` (no calibration) the interval is unknown: p is None."""
    from scipy import stats as sps

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
