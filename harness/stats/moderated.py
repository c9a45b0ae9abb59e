"""Moderated t: the rows of one comparison lend each other their spread (limma, Smyth 2004).

A comparison of K runs per side tests dozens of rows (names x series x percentiles) at
once, each with a variance estimated from a handful of runs: paired rounds of K = 3 give
each row 2 degrees of freedom, so its t needs 4.3 for p = 0.05 and, after Holm over 60
rows, about 35. The rows are measured in the same runs on the same machine, so their
variances are alike: an empirical Bayes prior fitted to all of them (a scaled inverse
chi-square with ``d0`` degrees of freedom around ``s0^2``) is combined with each row's own
variance,

    s~^2 = (d0 * s0^2 + d * s^2) / (d0 + d),    t on d0 + d degrees of freedom,

so a row's t rests on the whole table's evidence about the spread, and one whose few runs
agreed by luck no longer looks significant. ``d0`` is estimated from how much the rows'
variances differ beyond what their own degrees of freedom explain: when they differ a lot,
``d0`` is small and each row keeps its own; when they are consistent with one common
spread, ``d0`` is large. The hyperparameters come from the method of moments on log
variances (Smyth 2004, section 6.2).

Smyth, G. K. (2004). Linear models and empirical Bayes methods for assessing differential
expression in microarray experiments. Statistical Applications in Genetics and Molecular
Biology 3(1), article 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MAX_PRIOR_DF", "MIN_ROWS", "MIN_ROW_DF", "OUTLIER_LEVEL", "moderate", "outlier_ratio",
           "prior"]

#: fewer rows than this say too little about their common spread: no moderation
MIN_ROWS = 8
#: a prior this sure is as good as known: capped (t on ~1000 degrees of freedom is z)
MAX_PRIOR_DF = 1000.0
#: rows with fewer degrees of freedom are not moderated: they keep their own degrees of
#: freedom and the larger of their own variance and the prior's. On 1 degree of freedom
#: (two paired rounds: K = 3 with one round left out by the machine-speed gate) a log
#: variance scatters so widely (trigamma(1/2) = 4.9) that rows whose true spreads differ 10x
#: look alike, the prior becomes "one common spread, known" and the noisy rows get the
#: quiet rows' spread: simulated tables of 60 such rows gave a family-wise false-alarm rate
#: of 16 % after Holm (target 5 %), real A/A sessions of calibR 4 false alarms in 10
#: (BENCHMARKS.md). Their own variance alone is no better: two rounds that agree by luck
#: (-7.5 % and -7.6 %) have a variance near 0 and any t.
MIN_ROW_DF = 2.0
#: a row whose own variance is beyond this quantile of what the prior allows (F on its
#: degrees of freedom and ``d0``) is an outlier (one run far off: a p99 of 92 ms beside
#: 12 ms) and keeps its own variance (limma's robust option in spirit): on simulated tables
#: one such row took the family-wise false-alarm rate from 5 % to 11 % (K = 3) and 42 %
#: (K = 2); with the rule, 0.3 %.
OUTLIER_LEVEL = 0.999


def _trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (Smyth's Newton iteration, limma's trigammaInverse)."""
    from scipy.special import polygamma

    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        step = tri * (1.0 - tri / x) / float(polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def prior(variances: Sequence[float], dfs: Sequence[float]) -> tuple[float, float] | None:
    """(s0^2, d0) of the rows' variances ``variances`` on ``dfs`` degrees of freedom each;
    None when fewer than MIN_ROWS rows have a variance > 0."""
    from scipy.special import digamma, polygamma

    rows = [(s2, d) for s2, d in zip(variances, dfs, strict=True)
            if s2 > 0 and math.isfinite(s2) and d > 0]
    if len(rows) < MIN_ROWS:
        return None
    e = [math.log(s2) - float(digamma(d / 2)) + math.log(d / 2) for s2, d in rows]
    mean = sum(e) / len(e)
    spread = sum((x - mean) ** 2 for x in e) / (len(e) - 1)
    excess = spread - sum(float(polygamma(1, d / 2)) for _, d in rows) / len(rows)
    if excess <= 0:
        d0 = MAX_PRIOR_DF
    else:
        d0 = min(MAX_PRIOR_DF, 2.0 * _trigamma_inverse(excess))
    s0 = math.exp(mean + float(digamma(d0 / 2)) - math.log(d0 / 2))
    return s0, d0


def moderate(s2: float, df: float, s0: float, d0: float) -> tuple[float, float]:
    """(moderated variance, its degrees of freedom) of one row; on fewer than MIN_ROW_DF
    degrees of freedom the larger of its own variance and ``s0`` on its own ``df``; an
    outlier of the prior (OUTLIER_LEVEL) keeps its own (``s2``, ``df``)."""
    if df < MIN_ROW_DF:
        return max(s2, s0), df
    if s0 > 0 and s2 > s0 * outlier_ratio(df, d0):
        return s2, df
    return (d0 * s0 + df * s2) / (d0 + df), d0 + df


def outlier_ratio(df: float, d0: float) -> float:
    """How far above the prior's s0^2 a row's variance on ``df`` degrees of freedom may lie
    before it is an outlier: the OUTLIER_LEVEL quantile of F(df, d0)."""
    from scipy import stats as sps

    return float(sps.f.ppf(OUTLIER_LEVEL, df, d0))
