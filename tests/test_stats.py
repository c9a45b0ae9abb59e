"""harness.stats by value: hand-computed and analytic answers, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from scipy.stats import binom

from harness import stats


def hist_of(values, lowest=1, highest=3_600_000_000, sig=3) -> HdrHistogram:
    h = HdrHistogram(lowest, highest, sig)
    for v in values:
        assert h.record_value(v), v
    return h


def close(got: float, want: float) -> bool:
    # 3 significant figures: a bucket is at most 0.1 % of its value wide (+1 µs for rounding)
    return abs(got - want) <= want * 0.001 + 1


def test_percentiles_of_1_to_10000_match_order_statistics_and_hdrh():
    h = hist_of(range(1, 10_001))
    ps = [0, 1, 25, 50, 90, 99, 99.9, 100]
    got = stats.percentiles(h, ps)
    for p in ps:
        rank = max(1, round(p / 100 * 10_000))
        assert close(got[p], rank), (p, got[p])
        # the batched pass agrees exactly with HdrHistogram's own one-at-a-time query
        assert got[p] == h.get_value_at_percentile(p)
    assert got[0] == 1 and got[100] == h.get_max_value()


def test_small_values_are_exact_below_2048_us():
    h = hist_of(range(1, 1001))
    assert stats.percentiles(h, [50, 99, 99.9]) == {50: 500, 99: 990, 99.9: 999}
    assert stats.mean(h) == 500.5
    assert stats.mean(h) == pytest.approx(h.get_mean_value())


def test_coordinated_omission_fixture_raw_and_corrected():
    # HdrHistogram's classic fixture: 10,000 x 1 ms and one 100 s stall, interval 10 ms
    raw = hist_of([1000] * 10_000 + [100_000_000])
    corrected = HdrHistogram(1, 3_600_000_000, 3)
    for _ in range(10_000):
        corrected.record_corrected_value(1000, 10_000)
    corrected.record_corrected_value(100_000_000, 10_000)
    r = stats.percentiles(raw, [50, 99, 99.99, 100])
    assert close(r[50], 1000) and close(r[99], 1000) and close(r[99.99], 1000)
    assert close(r[100], 100_000_000)
    assert corrected.get_total_count() == 20_000
    c = stats.percentiles(corrected, [50, 75, 90, 99, 99.99])
    # the stall back-fills 10,000 values 10 ms apart: 10 ms, 20 ms, ..., 100 s
    assert close(c[50], 1000)
    assert close(c[75], 50_000_000) and close(c[90], 80_000_000)
    assert close(c[99], 98_000_000) and close(c[99.99], 99_980_000)


def test_edge_cases_empty_one_value_all_equal():
    empty = HdrHistogram(1, 3_600_000_000, 3)
    with pytest.raises(ValueError, match="empty"):
        stats.percentiles(empty, [50])
    with pytest.raises(ValueError, match="empty"):
        stats.mean(empty)
    d = stats.describe(empty)
    assert d.count == 0 and d.max_us is None and d.percentiles_us == {}
    assert d.low_samples == (50.0, 90.0, 95.0, 99.0, 99.9)

    one = hist_of([1234])
    assert set(stats.percentiles(one, [0, 50, 99.9, 100]).values()) == {1234}
    assert stats.mean(one) == 1234.0
    same = hist_of([777] * 500)
    assert stats.percentiles(same, [1, 50, 99]) == {1: 777, 50: 777, 99: 777}
    d = stats.describe(same)
    assert (d.count, d.min_us, d.max_us, d.mean_us) == (500, 777, 777, 777.0)
    assert d.low_samples == (99.9,)  # p99 needs 299, p99.9 needs 2995


def test_bad_percentile_and_rank_name_the_value():
    h = hist_of([5, 6, 7])
    with pytest.raises(ValueError, match=r"percentile must be a number in \[0, 100\] \(got 101\)"):
        stats.percentiles(h, [101])
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 3\] \(got 4\)"):
        stats.value_at_rank(h, 4)
    assert stats.value_at_rank(h, 2) == 6


def test_percentile_key():
    assert [stats.percentile_key(p) for p in (50, 99, 99.9, 99.99)] == [
        "p50", "p99", "p999", "p9999"]


def test_min_samples_for_percentile_analytic():
    # 1 - q**n >= 0.95  <=>  n >= ln(0.05) / ln(q)
    assert stats.min_samples_for_percentile(99) == 299
    assert stats.min_samples_for_percentile(99.9) == 2995
    assert stats.min_samples_for_percentile(50) == 5
    assert stats.min_samples_for_percentile(90) == 29
    assert stats.min_samples_for_percentile(99, confidence=0.99) == 459
    assert stats.min_samples_for_percentile(0) == 1
    for p in (50, 75, 90, 95, 99, 99.5, 99.9):
        for c in (0.9, 0.95, 0.99):
            n, q = stats.min_samples_for_percentile(p, c), p / 100
            # n is the least sample size whose chance of holding a value above p is >= c
            assert c <= 1 - q**n and c > 1 - q ** (n - 1)
            # the same n is where the order-statistic upper bound first exists
            assert stats.quantile_upper_bound_rank(n, p, c) == n
            assert stats.quantile_upper_bound_rank(n - 1, p, c) is None
    with pytest.raises(ValueError, match="< 100"):
        stats.min_samples_for_percentile(100)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\) \(got 1.5\)"):
        stats.min_samples_for_percentile(99, 1.5)


def _brute_upper(n: int, q: float, c: float) -> int | None:
    # every rank u = 1..n at once: coverage of X(u) is P(B <= u - 1)
    covered = np.flatnonzero(binom.cdf(np.arange(n), n, q) >= c)
    return int(covered[0]) + 1 if len(covered) else None


def test_upper_bound_rank_matches_brute_force():
    for n in (1, 10, 50, 299, 300, 1000, 5000):
        for p in (50, 90, 99, 99.9):
            assert stats.quantile_upper_bound_rank(n, p) == _brute_upper(n, p / 100, 0.95)


def test_two_sided_ranks_textbook_and_coverage():
    assert stats.quantile_ci_ranks(100, 50) == (40, 61)  # coverage 0.9648
    assert stats.quantile_ci_ranks(10, 50) == (2, 9)
    assert stats.quantile_ci_ranks(6, 50) == (1, 6)
    assert stats.quantile_ci_ranks(5, 50) == (None, None)  # 2 * 1/32 > 0.05
    for n, p in ((200, 90), (1000, 99), (5000, 99.9), (57, 25)):
        lo, hi = stats.quantile_ci_ranks(n, p)
        q, tail = p / 100, 0.025
        assert lo is not None and hi is not None
        assert binom.cdf(lo - 1, n, q) <= tail < binom.cdf(lo, n, q)
        assert binom.sf(hi - 1, n, q) <= tail < binom.sf(hi - 2, n, q)
        assert binom.cdf(hi - 1, n, q) - binom.cdf(lo - 1, n, q) >= 0.95


def test_quantile_ci_and_upper_bound_read_values_from_histogram():
    h = hist_of(range(1, 101))
    ci = stats.quantile_ci(h, 50)
    assert (ci.n, ci.lower_rank, ci.upper_rank, ci.lower_us, ci.upper_us) == (100, 40, 61, 40, 61)
    few = hist_of(range(1, 201))
    ub = stats.quantile_upper_bound(few, 99)
    assert ub.upper_rank is None and ub.upper_us is None  # 200 < 299 samples
    many = hist_of(range(1, 1001))
    ub = stats.quantile_upper_bound(many, 99)
    assert ub.upper_rank == _brute_upper(1000, 0.99, 0.95) == 996
    assert ub.upper_us == 996
    with pytest.raises(ValueError, match="empty"):
        stats.quantile_ci(HdrHistogram(1, 3_600_000_000, 3), 50)


def test_large_values_respect_hdr_precision():
    values = [int(1000 * 1.37**k) for k in range(40)]  # 1 ms .. ~220 s
    h = hist_of(values)
    ordered = sorted(values)
    for p, got in stats.percentiles(h, [10, 50, 90, 100]).items():
        want = ordered[max(1, round(p / 100 * len(values))) - 1]
        assert close(got, want), (p, got, want)
    assert math.isclose(stats.mean(h), sum(values) / len(values), rel_tol=1e-3)
