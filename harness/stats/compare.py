"""A distribution-free confidence interval for the difference of two percentiles.

Method (chosen for ``harness compare``): each histogram gives a two-sided
order-statistic interval for its own percentile (``stats.quantile_ci``) at
confidence ``(1 + c) / 2``; the difference B - A then lies in
``[low_B - high_A, high_B - low_A]`` with probability at least ``c`` (Bonferroni:
each interval misses with probability at most ``(1 - c) / 2``). It assumes only
that each run's samples are independent draws; it needs no distribution, no
resampling and gives the same answer every time. It is conservative: its
coverage is above ``c``, checked by simulation in tests/test_compare.py.

It does not model run-to-run drift of the machine (two separate runs on a busy
host differ by more than sampling explains): that is why the same-run,
interleaved comparison is the recommended workflow (docs/slo.md), and why
``min_effect_pct`` lets a comparison ignore differences too small to matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from harness.stats import quantiles as stats

__all__ = ["VERDICTS", "QuantileDiff", "quantile_diff", "quantile_diff_p", "verdict_for"]

VERDICTS = ("faster", "slower", "no significant difference", "insufficient data")


@dataclass(frozen=True)
class QuantileDiff:
    """B minus A at one percentile, with its confidence interval; values in µs.

    ``ci_low_us``/``ci_high_us`` are None when either run has too few samples to
    bound its percentile on that side at the per-run confidence.
    """

    percentile: float
    confidence: float
    a_n: int
    b_n: int
    a_us: int | None
    b_us: int | None
    diff_us: int | None
    ci_low_us: int | None
    ci_high_us: int | None

    @property
    def diff_pct(self) -> float | None:
        if self.diff_us is None or not self.a_us:
            return None
        return 100.0 * self.diff_us / self.a_us


def quantile_diff(a: HdrHistogram, b: HdrHistogram, p: float,
                  confidence: float = 0.95) -> QuantileDiff:
    """The p-th percentile of B minus that of A, with a conservative ``confidence`` interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence!r})")
    per_run = 1.0 - (1.0 - confidence) / 2.0
    a_n, b_n = int(a.get_total_count()), int(b.get_total_count())
    if a_n == 0 or b_n == 0:
        return QuantileDiff(float(p), confidence, a_n, b_n,
                            stats.percentiles(a, [p])[p] if a_n else None,
                            stats.percentiles(b, [p])[p] if b_n else None, None, None, None)
    a_us = stats.percentiles(a, [p])[p]
    b_us = stats.percentiles(b, [p])[p]
    ca = stats.quantile_ci(a, p, per_run)
    cb = stats.quantile_ci(b, p, per_run)
    low = cb.lower_us - ca.upper_us if cb.lower_us is not None and ca.upper_us is not None \
        else None
    high = cb.upper_us - ca.lower_us if cb.upper_us is not None and ca.lower_us is not None \
        else None
    return QuantileDiff(float(p), confidence, a_n, b_n, a_us, b_us, b_us - a_us, low, high)


def verdict_for(d: QuantileDiff, min_effect_pct: float = 0.0) -> str:
    """faster / slower (B relative to A) when the interval excludes zero, and the
    measured difference is at least ``min_effect_pct`` of A; else no significant difference.
    """
    if min_effect_pct < 0:
        raise ValueError(f"min_effect_pct must be >= 0 (got {min_effect_pct!r})")
    if d.ci_low_us is None or d.ci_high_us is None or d.diff_us is None:
        return "insufficient data"
    small = d.a_us is not None and abs(d.diff_us) < d.a_us * min_effect_pct / 100.0
    if d.ci_low_us > 0 and not small:
        return "slower"
    if d.ci_high_us < 0 and not small:
        return "faster"
    return "no significant difference"


def _excludes_zero(d: QuantileDiff) -> bool:
    return (d.ci_low_us is not None and d.ci_low_us > 0) or \
        (d.ci_high_us is not None and d.ci_high_us < 0)


def quantile_diff_p(a: HdrHistogram, b: HdrHistogram, p: float,
                    floor: float = 1e-12) -> float | None:
    """The two-sided p-value that goes with ``quantile_diff``'s interval: the smallest
    1 - c at which the interval at confidence c excludes zero, so ``p <= 1 - c`` exactly
    when the interval at c excludes it (Holm needs p-values; this one keeps the interval's
    assumptions and its conservatism). Found by bisection on log(1 - c) to 1 % of p;
    ``floor`` when even the widest interval excludes zero, 1.0 when no interval does, None
    when a side is empty."""
    import math

    if a.get_total_count() == 0 or b.get_total_count() == 0:
        return None

    def excludes(alpha: float) -> bool:
        return _excludes_zero(quantile_diff(a, b, p, 1.0 - alpha))

    if excludes(floor):
        return floor
    top = 1.0 - 1e-9
    if not excludes(top):
        return 1.0
    lo, hi = math.log(floor), math.log(top)  # excludes(e^lo) is False, excludes(e^hi) True
    while hi - lo > 0.01:
        mid = (lo + hi) / 2.0
        if excludes(math.exp(mid)):
            hi = mid
        else:
            lo = mid
    return min(1.0, math.exp(hi))
