"""Pure statistics over HdrHistograms: percentiles, order-statistic bounds, sample sizes.

Every function here is a pure function of its arguments (no I/O), so it can be
tested by value against hand-computed or analytic answers.

Precision: a histogram with 3 significant figures stores each value in a bucket no
wider than 0.1 % of the value, so a percentile read from it is within
``value * 0.001 + 1`` µs of the exact order statistic of the recorded values.
Percentiles follow HdrHistogram's definition (the same numbers Java's
``getValueAtPercentile`` and wrk2 report): the value at rank
``max(1, round(p / 100 * n))`` reported as the highest value equivalent to it;
``p = 0`` reports the lowest.

Percentiles are given in percent (``99.9``), as HdrHistogram does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = [
    "HistogramStats",
    "QuantileBound",
    "counts_array",
    "describe",
    "mean",
    "min_samples_for_percentile",
    "percentile_key",
    "percentiles",
    "quantile_ci",
    "quantile_ci_ranks",
    "quantile_upper_bound",
    "quantile_upper_bound_rank",
    "value_at_rank",
]


def _check_percentile(p: float) -> float:
    if not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 100.0:
        raise ValueError(f"percentile must be a number in [0, 100] (got {p!r})")
    return float(p)


def _check_confidence(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence!r})")
    return float(confidence)


def percentile_key(p: float) -> str:
    """The key a percentile gets in summary.json: 50 -> ``p50``, 99.9 -> ``p999``.

    Dots are avoided because tools such as pandas' json_normalize split keys on them.
    """
    _check_percentile(p)
    text = f"{float(p):g}"
    return "p" + text.replace(".", "")


def counts_array(hist: HdrHistogram) -> np.ndarray:
    """A read-only numpy view of the histogram's counts (no copy)."""
    view = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    view.flags.writeable = False
    return view


def _cumulative(hist: HdrHistogram) -> np.ndarray:
    return np.cumsum(counts_array(hist), dtype=np.int64)


def _total(hist: HdrHistogram) -> int:
    # The counts array is the truth; total_count can lag behind after manual merges.
    return int(counts_array(hist).sum())


def percentiles(hist: HdrHistogram, ps: Iterable[float]) -> dict[float, int]:
    """Values (µs) at several percentiles in one pass over the counts.

    A single ``get_value_at_percentile`` walks the whole counts array in Python
    (about 1.5 ms for a 1 µs .. 1 h histogram); here one cumulative sum serves all.
    Raises ValueError on an empty histogram: a percentile of nothing is undefined.
    """
    wanted = [_check_percentile(p) for p in ps]
    cum = _cumulative(hist)
    total = int(cum[-1]) if len(cum) else 0
    if total == 0:
        raise ValueError("histogram is empty (count 0): percentiles are undefined")
    result: dict[float, int] = {}
    for p in wanted:
        target = max(int(p * total / 100.0 + 0.5), 1)
        index = int(np.searchsorted(cum, min(target, total), side="left"))
        value = hist.get_value_from_index(index)
        if p == 0.0:
            result[p] = int(hist.get_lowest_equivalent_value(value))
        else:
            result[p] = int(hist.get_highest_equivalent_value(value))
    return result


def value_at_rank(hist: HdrHistogram, rank: int, *, upper: bool = True) -> int:
    """The value (µs) of the ``rank``-th smallest recorded sample (1-based).

    ``upper=True`` reports the highest value of its bucket (conservative for an
    upper bound), ``upper=False`` the lowest (conservative for a lower bound).
    """
    total = _total(hist)
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= total:
        raise ValueError(f"rank must be an integer in [1, {total}] (got {rank!r})")
    cum = _cumulative(hist)
    index = int(np.searchsorted(cum, int(rank), side="left"))
    value = hist.get_value_from_index(index)
    if upper:
        return int(hist.get_highest_equivalent_value(value))
    return int(hist.get_lowest_equivalent_value(value))


def mean(hist: HdrHistogram) -> float:
    """Mean in µs, each bucket counted at its midpoint (as HdrHistogram does)."""
    counts = counts_array(hist)
    nz = np.flatnonzero(counts)
    total = int(counts[nz].sum()) if len(nz) else 0
    if total == 0:
        raise ValueError("histogram is empty (count 0): the mean is undefined")
    acc = 0
    for index in nz:
        low = hist.get_value_from_index(int(index))
        high = hist.get_highest_equivalent_value(low)
        acc += int(counts[index]) * (low + (high - low + 1) // 2)
    return acc / total


@dataclass(frozen=True)
class HistogramStats:
    """Count, extremes, mean and percentiles of one histogram; all values in µs."""

    count: int
    min_us: int | None
    max_us: int | None
    mean_us: float | None
    percentiles_us: dict[float, int] = field(default_factory=dict)
    #: percentiles whose sample count is below ``min_samples_for_percentile``
    low_samples: tuple[float, ...] = ()


def describe(
    hist: HdrHistogram, ps: Sequence[float] = (50, 90, 95, 99, 99.9), confidence: float = 0.95
) -> HistogramStats:
    """Everything a summary row needs, with low-sample percentiles flagged.

    An empty histogram is a defined answer here (count 0, no values), unlike
    ``percentiles``, because a summary row may legitimately have no samples.
    """
    total = _total(hist)
    if total == 0:
        return HistogramStats(0, None, None, None, {}, tuple(float(p) for p in ps))
    pct = percentiles(hist, ps)
    nz = np.flatnonzero(counts_array(hist))
    low_value = hist.get_value_from_index(int(nz[0]))
    high_value = hist.get_highest_equivalent_value(hist.get_value_from_index(int(nz[-1])))
    low = tuple(p for p in pct if total < min_samples_for_percentile(p, confidence))
    return HistogramStats(total, int(low_value), int(high_value), mean(hist), pct, low)


def min_samples_for_percentile(p: float, confidence: float = 0.95) -> int:
    """Smallest n for which a one-sided upper confidence bound of the p-th percentile exists.

    With n samples, the largest one exceeds the true q-quantile (q = p/100) unless all n
    fall below it, which happens with probability q**n. The bound exists at
    ``confidence`` when ``1 - q**n >= confidence``, i.e. ``n >= ln(1-c) / ln(q)``.
    For p99 at 95 %: ln(0.05)/ln(0.99) = 298.07, so 299.
    """
    p = _check_percentile(p)
    c = _check_confidence(confidence)
    if p >= 100.0:
        raise ValueError(f"percentile must be < 100 for a finite sample size (got {p!r})")
    if p == 0.0:
        return 1
    q = p / 100.0
    n = max(1, math.ceil(math.log1p(-c) / math.log(q)))
    # Guard the float ceiling at an exact boundary: step to the true smallest n.
    while n > 1 and 1.0 - q ** (n - 1) >= c:
        n -= 1
    while 1.0 - q**n < c:
        n += 1
    return n


def quantile_upper_bound_rank(n: int, p: float, confidence: float = 0.95) -> int | None:
    """Smallest rank u with P(X(u) >= true quantile) >= confidence, or None if u > n.

    X(u) >= the q-quantile unless at least u samples fall below it, so the
    coverage is P(Binomial(n, q) <= u - 1).
    """
    q = _check_percentile(p) / 100.0
    c = _check_confidence(confidence)
    if n < 1:
        raise ValueError(f"sample count must be >= 1 (got {n!r})")
    from scipy.stats import binom  # lazy: scipy.stats costs ~0.9 s to import

    k = int(binom.ppf(c, n, q))  # smallest k with CDF(k) >= c
    while k > 0 and binom.cdf(k - 1, n, q) >= c:
        k -= 1
    while binom.cdf(k, n, q) < c:
        k += 1
    u = k + 1
    return u if u <= n else None


def quantile_ci_ranks(
    n: int, p: float, confidence: float = 0.95
) -> tuple[int | None, int | None]:
    """Ranks (l, u), 1-based, of a two-sided distribution-free confidence interval.

    P(X(l) <= quantile <= X(u)) = P(l <= B <= u - 1) with B ~ Binomial(n, q); each
    tail gets (1 - confidence) / 2. A side that needs a rank outside 1..n is None:
    the data cannot bound it at that confidence.
    """
    q = _check_percentile(p) / 100.0
    c = _check_confidence(confidence)
    if n < 1:
        raise ValueError(f"sample count must be >= 1 (got {n!r})")
    tail = (1.0 - c) / 2.0
    from scipy.stats import binom  # lazy: scipy.stats costs ~0.9 s to import

    # Lower: largest l with P(B <= l - 1) <= tail.
    k = int(binom.ppf(tail, n, q))
    while binom.cdf(k, n, q) > tail and k >= 0:
        k -= 1
    while k + 1 <= n and binom.cdf(k + 1, n, q) <= tail:
        k += 1
    lower = k + 1 if k + 1 >= 1 else None
    # Upper: smallest u with P(B >= u) <= tail.
    k = int(binom.ppf(1.0 - tail, n, q))
    while k > 0 and binom.sf(k - 1, n, q) <= tail:
        k -= 1
    while binom.sf(k, n, q) > tail:
        k += 1
    upper = k + 1 if k + 1 <= n else None
    return lower, upper


@dataclass(frozen=True)
class QuantileBound:
    """A confidence bound or interval for one percentile, read from a histogram (µs)."""

    percentile: float
    confidence: float
    n: int
    lower_rank: int | None
    upper_rank: int | None
    lower_us: int | None
    upper_us: int | None


def quantile_ci(hist: HdrHistogram, p: float, confidence: float = 0.95) -> QuantileBound:
    """Two-sided interval for the p-th percentile from the histogram's order statistics.

    The lower end is reported at its bucket's lowest value and the upper end at its
    bucket's highest, so bucketing can only widen the interval.
    """
    n = _total(hist)
    if n == 0:
        raise ValueError("histogram is empty (count 0): no confidence interval")
    lo, hi = quantile_ci_ranks(n, p, confidence)
    return QuantileBound(
        float(p), float(confidence), n, lo, hi,
        value_at_rank(hist, lo, upper=False) if lo is not None else None,
        value_at_rank(hist, hi, upper=True) if hi is not None else None,
    )


def quantile_upper_bound(hist: HdrHistogram, p: float, confidence: float = 0.95) -> QuantileBound:
    """One-sided upper bound for the p-th percentile (what an SLO check needs)."""
    n = _total(hist)
    if n == 0:
        raise ValueError("histogram is empty (count 0): no confidence bound")
    u = quantile_upper_bound_rank(n, p, confidence)
    return QuantileBound(
        float(p), float(confidence), n, None, u, None,
        value_at_rank(hist, u, upper=True) if u is not None else None,
    )
