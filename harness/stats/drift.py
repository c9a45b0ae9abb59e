"""Drift statistics: pure functions over samples, counts and summarised reference distributions.

Conventions (docs/monitoring.md has the table of defaults and why):

- PSI = sum((c - r) * ln(c / r)) over bins, proportions floored at ``PSI_EPS`` (1e-4, as
  Evidently does) so an empty bin gives a large but finite term; 0.1 moderate, 0.25 major.
- KS: one-sample Kolmogorov-Smirnov of the traffic against the reference CDF rebuilt from
  the saved quantiles and histogram edges (piecewise linear between knots, see
  :func:`ks_test` for ties); drift when p < 0.05. Used when the traffic sample is small
  (<= ``LARGE_SAMPLE``).
- Wasserstein distance normed by the reference standard deviation (Evidently's
  ``wasserstein``), drift when >= 0.1; used on large samples, where a p-value flags every
  negligible difference.
- Categorical: chi-squared goodness of fit (p < 0.05) on small samples, Jensen-Shannon
  distance (natural log, in [0, sqrt(ln 2)], drift when >= 0.1) on large ones.
- KL divergence (nats) ``D_KL(P || Q)`` between two binned distributions after adding
  ``KL_PSEUDOCOUNT`` (0.5, Jeffreys) to every bin of both, so it is finite.

Every function returns a defined value for empty, constant or tiny inputs and says so with
a warning string in its result instead of returning NaN or raising on data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# scipy is imported where it is used: importing scipy.stats costs ~1 s of CPU, and every
# summary imports this module (its thresholds) without computing any drift

__all__ = ["PSI_EPS", "PSI_MODERATE", "PSI_MAJOR", "P_VALUE", "DISTANCE_THRESHOLD",
           "LARGE_SAMPLE", "MIN_SAMPLE", "KL_PSEUDOCOUNT", "DriftResult", "ReferenceCDF",
           "psi", "psi_level", "kl_divergence", "js_distance", "ks_test", "numeric_drift",
           "categorical_drift"]

PSI_EPS = 1e-4
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
P_VALUE = 0.05
DISTANCE_THRESHOLD = 0.1
LARGE_SAMPLE = 1000
#: below this many values a feature gets a statistic but no verdict ("too few")
MIN_SAMPLE = 30
KL_PSEUDOCOUNT = 0.5


Counts = Sequence[float] | np.ndarray


def _proportions(counts: Counts, label: str) -> np.ndarray:
    arr = np.asarray(counts, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{label} must be a non-empty 1-D sequence of counts (got {counts!r})")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{label} must be finite counts >= 0 (got {counts!r})")
    return arr


def psi(reference: Counts, current: Counts, eps: float = PSI_EPS) -> float:
    """Population stability index of ``current`` against ``reference`` (counts per bin).

    Zero total on either side gives 0.0 (nothing to compare); callers flag it.
    """
    ref = _proportions(reference, "reference")
    cur = _proportions(current, "current")
    if ref.size != cur.size:
        raise ValueError(f"reference and current need the same bins (got {ref.size} and "
                         f"{cur.size})")
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    r = np.maximum(ref / ref.sum(), eps)
    c = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def kl_divergence(p_counts: Counts, q_counts: Counts,
                  pseudocount: float = KL_PSEUDOCOUNT) -> float:
    """``D_KL(P || Q)`` in nats over the same bins, each bin smoothed by ``pseudocount``.

    ``scipy.stats.entropy(p, q)`` after the smoothing (it normalizes both sides); ``inf``
    when Q has no mass where P has some (only possible with ``pseudocount=0``).
    """
    p = _proportions(p_counts, "p_counts") + pseudocount
    q = _proportions(q_counts, "q_counts") + pseudocount
    if p.size != q.size:
        raise ValueError(f"p and q need the same bins (got {p.size} and {q.size})")
    if pseudocount < 0 or p.sum() == 0 or q.sum() == 0:
        raise ValueError(f"pseudocount must be >= 0 and leave mass on both sides "
                         f"(got {pseudocount!r})")
    from scipy import stats as sps

    return float(sps.entropy(p, q))


def js_distance(p_counts: Counts, q_counts: Counts) -> float:
    """Jensen-Shannon distance (natural log) of two count vectors; 0.0 if either is empty.

    ``scipy.spatial.distance.jensenshannon``; identical inputs can round to a tiny negative
    divergence, whose square root scipy returns as NaN: that is a distance of 0.
    """
    p = _proportions(p_counts, "p_counts")
    q = _proportions(q_counts, "q_counts")
    if p.size != q.size:
        raise ValueError(f"p and q need the same bins (got {p.size} and {q.size})")
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    from scipy.spatial.distance import jensenshannon

    with np.errstate(invalid="ignore"):
        d = float(jensenshannon(p, q))
    return 0.0 if math.isnan(d) else d


@dataclass(frozen=True)
class DriftResult:
    """One feature's drift verdict and the numbers behind it.

    ``drifted`` is None when there is no verdict (too few values); ``method`` names the
    statistic the verdict uses, ``score`` its value, ``threshold`` the line it is held to
    (a p-value when ``method`` is a test, where drift is ``score < threshold``).
    """

    method: str
    score: float
    threshold: float
    drifted: bool | None
    psi: float
    n: int
    extra: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "score": _round(self.score),
                "threshold": self.threshold, "drifted": self.drifted,
                "psi": _round(self.psi), "psi_level": psi_level(self.psi), "n": self.n,
                **{k: _round(v) for k, v in self.extra.items()},
                "warnings": list(self.warnings)}


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def psi_level(value: float) -> str:
    """``none`` < 0.1 <= ``moderate`` < 0.25 <= ``major``."""
    return "major" if value >= PSI_MAJOR else "moderate" if value >= PSI_MODERATE else "none"


class ReferenceCDF:
    """The training distribution of a numeric feature, rebuilt from reference_stats.json.

    Knots: (min, 0) and (max, 1), every saved quantile, and the histogram's interior edges
    with the exact cumulative share below them (the first/last bins hold the clipped tails,
    so only interior edges are exact). Between knots the CDF is linear; at a repeated x
    (a constant or integer-valued feature) it takes the highest share, i.e. a step.
    """

    def __init__(self, stats: Mapping[str, object]) -> None:
        hist = stats.get("histogram")
        quantiles = stats.get("quantiles")
        if not isinstance(hist, Mapping) or not isinstance(quantiles, Mapping):
            raise ValueError(f"numeric reference needs 'histogram' and 'quantiles' "
                             f"(got keys {sorted(stats)!r})")
        edges = np.asarray(hist["edges"], dtype=float)
        counts = np.asarray(hist["counts"], dtype=float)
        if edges.size != counts.size + 1 or counts.sum() <= 0:
            raise ValueError(f"reference histogram needs len(edges) == len(counts) + 1 and "
                             f"counts > 0 (got {edges.size} edges, {counts.size} counts)")
        self.edges = edges
        self.counts = counts
        self.std = float(stats.get("std", 0.0) or 0.0)  # type: ignore[arg-type]
        raw = stats.get("sample")
        #: raw reference values when the reference is another run (two-sample tests then)
        self.sample = np.sort(np.asarray(raw, dtype=float)) if raw is not None else None
        pts: dict[float, float] = {}

        def add(x: float, p: float) -> None:
            pts[x] = max(pts.get(x, 0.0), p)

        for q, v in quantiles.items():
            add(float(v), float(q))
        cum = np.cumsum(counts) / counts.sum()
        for x, p in zip(edges[1:-1], cum[:-1], strict=True):
            add(float(x), float(p))
        if self.sample is not None and self.sample.size:
            distinct = np.unique(self.sample)
            shares = np.searchsorted(self.sample, distinct, side="right") / self.sample.size
            for x, p in zip(distinct, shares, strict=True):
                add(float(x), float(p))
        xs = np.array(sorted(pts))
        ps = np.maximum.accumulate(np.array([pts[x] for x in xs]))
        self.xs, self.ps = xs, ps
        values = [float(v) for v in quantiles.values()]
        #: every saved quantile is a whole number: a count-like feature (hour, num_devices)
        self.integer = bool(values) and all(float(v).is_integer() for v in values)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Right-continuous CDF; exact at knots, linear between them.

        An integer-valued feature is flat on [k, k+1), so at a whole k the share of the
        last knot below k+1 is exact; linear interpolation would smear the next step in.
        """
        x = np.asarray(x, dtype=float)
        # Knots are unique, so at a knot interp gives its (highest) share: right-continuous.
        out = np.interp(x, self.xs, self.ps, left=0.0, right=1.0)
        if self.integer:
            j = np.searchsorted(self.xs, np.floor(x) + 1.0, side="left") - 1
            jc = np.clip(j, 0, None)
            step = (x == np.floor(x)) & (j >= 0) & (self.xs[jc] >= np.floor(x))
            out = np.where(step, self.ps[jc], out)
        return out

    def ppf(self, p: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(p, dtype=float), self.ps, self.xs)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` in the reference bins, tails clipped in as the reference did."""
        lo, hi = self.edges[0], self.edges[-1]
        counts, _ = np.histogram(np.clip(values, lo, hi), bins=self.edges)
        return counts


def ks_test(values: np.ndarray, reference: ReferenceCDF) -> tuple[float, float]:
    """One-sample KS statistic and p-value of ``values`` against ``reference``.

    D is ``max |F_n(x) - F(x)|`` over the distinct sample values (both CDFs taken right-
    continuous). The saved reference is exact at its knots but linear between them, so
    left limits would invent a gap at every tie of an integer feature (``hour``,
    ``num_devices``); dropping them changes D by at most 1/n on continuous data. The
    p-value is the exact two-sided KS distribution for n (conservative on discrete data).
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        raise ValueError("ks_test needs at least one value (got none)")
    distinct = np.unique(x)
    ecdf = np.searchsorted(x, distinct, side="right") / n
    d = float(np.max(np.abs(ecdf - reference.cdf(distinct))))
    from scipy import stats as sps

    return d, float(sps.kstwo.sf(d, n))


def numeric_drift(reference: ReferenceCDF, values: Sequence[float],
                  large_sample: int = LARGE_SAMPLE) -> DriftResult:
    """Drift of numeric ``values`` (NaN = missing, ignored here) from ``reference``."""
    from scipy import stats as sps

    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    warnings: list[str] = []
    if n == 0:
        return DriftResult("none", 0.0, 0.0, None, 0.0, 0,
                           warnings=("no non-null values: no drift verdict",))
    psi_value = psi(reference.counts, reference.bin_counts(arr))
    if n < MIN_SAMPLE:
        warnings.append(f"only {n} values (< {MIN_SAMPLE}): statistics shown, no verdict")
    if np.ptp(arr) == 0:
        warnings.append(f"constant column (every value {arr[0]:g})")
    if n > large_sample:
        grid = reference.sample if reference.sample is not None \
            else reference.ppf((np.arange(2000) + 0.5) / 2000)
        w = float(sps.wasserstein_distance(grid, arr))
        scale = reference.std if reference.std > 0 else 1.0
        if reference.std <= 0:
            warnings.append("reference std is 0: Wasserstein distance not normed")
        score = w / scale
        drifted = score >= DISTANCE_THRESHOLD
        res = DriftResult("wasserstein", score, DISTANCE_THRESHOLD, drifted, psi_value, n,
                          warnings=tuple(warnings))
    else:
        if reference.sample is not None and reference.sample.size:
            # The asymptotic p-value: the exact one fails (with a warning) on ties.
            two = sps.ks_2samp(reference.sample, arr, method="asymp")
            d, p = float(two.statistic), float(two.pvalue)
        else:
            d, p = ks_test(arr, reference)
        verdict = p < P_VALUE if n >= MIN_SAMPLE else None
        res = DriftResult("ks", p, P_VALUE, verdict, psi_value, n, {"ks_statistic": d},
                          tuple(warnings))
    if n < MIN_SAMPLE:
        res = DriftResult(res.method, res.score, res.threshold, None, res.psi, n, res.extra,
                          res.warnings)
    return res


def categorical_drift(frequencies: Mapping[str, float], values: Sequence[object],
                      large_sample: int = LARGE_SAMPLE) -> DriftResult:
    """Drift of categorical ``values`` (None = missing) from reference ``frequencies``.

    Values outside the reference categories count in an extra ``(unseen)`` bin whose
    reference share is 0, so a new category raises PSI and JS instead of vanishing.
    """
    from scipy import stats as sps

    cats = list(frequencies)
    if not cats:
        raise ValueError(f"frequencies must name at least one category (got {frequencies!r})")
    present = [v for v in values if v is not None]
    n = len(present)
    if n == 0:
        return DriftResult("none", 0.0, 0.0, None, 0.0, 0,
                           warnings=("no non-null values: no drift verdict",))
    index = {c: i for i, c in enumerate(cats)}
    cur = np.zeros(len(cats) + 1)
    for v in present:
        cur[index.get(str(v), len(cats))] += 1
    ref = np.array([float(frequencies[c]) for c in cats] + [0.0])
    warnings: list[str] = []
    if n < MIN_SAMPLE:
        warnings.append(f"only {n} values (< {MIN_SAMPLE}): statistics shown, no verdict")
    if np.count_nonzero(cur) == 1:
        warnings.append("constant column (one category)")
    psi_value = psi(ref, cur)
    js = js_distance(ref, cur)
    if n > large_sample:
        return DriftResult("jensen_shannon", js, DISTANCE_THRESHOLD, js >= DISTANCE_THRESHOLD,
                           psi_value, n, {}, tuple(warnings))
    # Chi-squared needs expected > 0 everywhere: an unseen category is drift by itself.
    expected = ref / ref.sum() * n
    keep = expected > 0
    extra = {"js": js}
    if cur[~keep].sum() > 0:
        p = 0.0
        warnings.append("values outside the reference categories: chi-squared p set to 0")
    else:
        test = sps.chisquare(cur[keep], expected[keep])
        p = float(test.pvalue) if math.isfinite(test.pvalue) else 1.0
        extra["chi2"] = float(test.statistic)
    drifted = (p < P_VALUE) if n >= MIN_SAMPLE else None
    return DriftResult("chi_squared", p, P_VALUE, drifted, psi_value, n, extra,
                       tuple(warnings))
