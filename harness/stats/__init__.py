"""Pure statistics over HdrHistograms and samples: no I/O, no run directory.

``quantiles`` (percentiles in one pass, order-statistic confidence intervals and upper
bounds, the samples a percentile needs; re-exported here), ``compare`` (distribution-free
intervals for the difference of two quantiles) and ``drift`` (PSI, KS, KL and JS
divergence against a reference distribution).
"""

from __future__ import annotations

from harness.stats.quantiles import (
    HistogramStats,
    QuantileBound,
    counts_array,
    describe,
    mean,
    min_samples_for_percentile,
    percentile_key,
    percentiles,
    quantile_ci,
    quantile_ci_ranks,
    quantile_upper_bound,
    quantile_upper_bound_rank,
    value_at_rank,
)

__all__ = ["HistogramStats", "QuantileBound", "counts_array", "describe", "mean",
           "min_samples_for_percentile", "percentile_key", "percentiles", "quantile_ci",
           "quantile_ci_ranks", "quantile_upper_bound", "quantile_upper_bound_rank",
           "value_at_rank"]
