"""Data checks of a run: input drift, data quality and prediction shift (``harness data``).

``check_features`` and ``prediction_shift`` are pure functions of their inputs;
``harness.analysis.data.report.check_run`` gathers them from a run directory (``traffic/`` recorded
by the service, ``metrics/*.prom`` scraped by the Prometheus collector) against the
training reference or a baseline run. Thresholds and statistics: harness/drift.py and
docs/monitoring.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.analysis.data.inputs import ABSENT, Reference, TrafficSample
from harness.analysis.data.popularity import design_effect, rao_scott_p
from harness.rundir.scrapes import histogram_delta, read_scrape
from harness.stats import drift

__all__ = ["NULL_RATE_DELTA", "NULL_P_VALUE", "OUT_OF_RANGE_SHARE", "DATASET_DRIFT_SHARE",
           "PROBABILITY_METRIC", "FeatureCheck", "PredictionShift", "DataReport",
           "check_feature", "check_features", "null_rate_increases", "prediction_shift",
           "homogeneity_p", "run_predictions"]

NULL_RATE_DELTA = 0.05
NULL_P_VALUE = 0.01
OUT_OF_RANGE_SHARE = 0.01
DATASET_DRIFT_SHARE = 0.5
PROBABILITY_METRIC = "refsvc_prediction_probability"
MISSING_METRIC = "refsvc_missing_features_total"
NULL_METRIC = "refsvc_null_features_total"
ROWS_METRIC = "refsvc_feature_rows_total"


@dataclass(frozen=True)
class FeatureCheck:
    """Quality and drift of one feature in the traffic against its training reference."""

    feature: str
    kind: str
    source: str
    rows: int
    present: int
    nulls: int
    null_rate: float
    reference_null_rate: float
    null_increase: bool | None
    out_of_range: int
    unseen: dict[str, int]
    type_mismatches: int
    drift: drift.DriftResult
    warnings: tuple[str, ...] = ()

    @property
    def problems(self) -> list[str]:
        out = []
        if self.null_increase:
            out.append(f"nulls {100 * self.null_rate:.1f}% (ref "
                       f"{100 * self.reference_null_rate:.1f}%)")
        valid = max(self.present - self.type_mismatches, 1)
        if self.out_of_range and self.out_of_range / valid >= OUT_OF_RANGE_SHARE:
            out.append(f"out of range {100 * self.out_of_range / valid:.1f}%")
        if self.unseen:
            out.append("unseen " + ", ".join(f"{k}({v})" for k, v in sorted(self.unseen.items())))
        if self.type_mismatches:
            out.append(f"{self.type_mismatches} wrong-typed")
        if self.drift.drifted:
            out.append("drift")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "source": self.source,
                "rows": self.rows, "present": self.present, "nulls": self.nulls,
                "null_rate": round(self.null_rate, 6),
                "reference_null_rate": round(self.reference_null_rate, 6),
                "null_increase": self.null_increase, "out_of_range": self.out_of_range,
                "unseen": dict(self.unseen), "type_mismatches": self.type_mismatches,
                "drift": self.drift.to_dict(), "problems": self.problems,
                "warnings": list(self.warnings)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_feature(name: str, ref: Mapping[str, Any], values: Sequence[Any], rows: int,
                  schema: Mapping[str, Any] | None = None) -> FeatureCheck:
    """One feature: ``values`` are the raw values of rows that carry it (None = null)."""
    kind = ref.get("kind")
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"reference of {name!r} must have kind numeric or categorical "
                         f"(got {kind!r})")
    schema = schema or {}
    nulls = sum(1 for v in values if v is None or (isinstance(v, float) and math.isnan(v)))
    present = len(values) - nulls
    null_rate = nulls / len(values) if values else 0.0
    ref_null = float(ref.get("null_rate", 0.0))
    warnings: list[str] = []
    null_increase: bool | None = None
    if len(values) >= drift.MIN_SAMPLE:
        # One-sided binomial: a real rise, not a small sample's wobble, and a material one.
        p = sps.binomtest(nulls, len(values), min(max(ref_null, 1e-6), 1 - 1e-6),
                          alternative="greater").pvalue
        null_increase = bool(null_rate - ref_null >= NULL_RATE_DELTA and p < NULL_P_VALUE)
    elif values:
        warnings.append(f"only {len(values)} rows: no null-rate verdict")
    mismatches = 0
    out_of_range = 0
    unseen: dict[str, int] = {}
    if kind == "numeric":
        good = [float(v) for v in values if _is_number(v) and math.isfinite(v)]
        mismatches = sum(1 for v in values if v is not None and not _is_number(v))
        lo = float(schema.get("min", ref.get("min", -math.inf)))
        hi = float(schema.get("max", ref.get("max", math.inf)))
        out_of_range = sum(1 for v in good if v < lo or v > hi)
        if "histogram" in ref:
            result = drift.numeric_drift(drift.ReferenceCDF(ref), good)
        else:
            result = drift.DriftResult("none", 0.0, 0.0, None, 0.0, len(good),
                                       warnings=("reference has no distribution (all null "
                                                 "in training)",))
    else:
        good_c = [v for v in values if isinstance(v, str)]
        mismatches = sum(1 for v in values if v is not None and not isinstance(v, str))
        known = set(schema.get("categories", ref.get("frequencies", {})))
        for v in good_c:
            if v not in known:
                unseen[v] = unseen.get(v, 0) + 1
        result = drift.categorical_drift(ref["frequencies"], good_c)
    if not values:
        warnings.append("feature absent from every row")
    return FeatureCheck(name, str(kind), str(ref.get("source", "?")), rows, present, nulls,
                        null_rate, ref_null, null_increase, out_of_range, unseen, mismatches,
                        result, tuple(warnings))


def check_features(reference: Reference, sample: TrafficSample) -> list[FeatureCheck]:
    """Every reference feature the traffic carries, in the reference's order."""
    out = []
    for name, ref in reference.features.items():
        col = sample.values.get(name)
        if col is None:
            continue
        # Absent from a row (not sent, entity not found) is not a null: the service fills
        # defaults for those; only explicit nulls and store nulls count.
        vals = [v for v in col if v is not ABSENT]
        out.append(check_feature(name, ref, vals, sample.rows, reference.schema.get(name)))
    return out


@dataclass(frozen=True)
class PredictionShift:
    """Predicted-probability distribution of one model version against a baseline."""

    model: str
    version: str
    baseline: str
    n: int
    baseline_n: int
    kl: float
    js: float
    psi: float
    mean: float
    baseline_mean: float
    shifted: bool | None
    warnings: tuple[str, ...] = ()
    #: chi-squared homogeneity p-value when the verdict used it (small samples)
    p_value: float | None = None
    #: the predictions' effective sample size (entity popularity, ``popularity``) and
    #: where it came from: ``traffic`` (the recorded entity ids) or ``assumed``
    n_eff: float | None = None
    n_eff_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"p_value": self.p_value, "model": self.model, "version": self.version,
                "n_eff": None if self.n_eff is None else round(self.n_eff, 1),
                "n_eff_source": self.n_eff_source,
                "baseline": self.baseline,
                "n": self.n, "baseline_n": self.baseline_n, "kl": round(self.kl, 6),
                "js": round(self.js, 6), "psi": round(self.psi, 6),
                "mean": round(self.mean, 6), "baseline_mean": round(self.baseline_mean, 6),
                "shifted": self.shifted, "warnings": list(self.warnings)}


def _bin_mean(edges: Sequence[float], counts: Sequence[float]) -> float:
    c = np.asarray(counts, dtype=float)
    mids = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
    return float((c * mids).sum() / c.sum()) if c.sum() else 0.0


def prediction_shift(model: str, version: str, edges: Sequence[float],
                     counts: Sequence[float], base_counts: Sequence[float],
                     baseline: str = "reference", n_eff: tuple[float, str] | None = None
                     ) -> PredictionShift:
    """Shift of ``counts`` from ``base_counts`` over the same probability bins ``edges``.

    KL is ``D_KL(run || baseline)`` in nats with 0.5 added to every bin; JS is the
    Jensen-Shannon distance (natural log). The verdict follows the feature rule: with
    <= 1000 (effective) run predictions a chi-squared test of homogeneity of the two binned
    samples (shifted when p < 0.05; JS of a small sample is biased upwards by its noise),
    above that JS >= 0.1; fewer than 30 predictions on either side: no verdict.

    ``n_eff`` (effective size, its source): the predictions repeat popular entities, so the
    chi-squared statistic is divided by the design effect ``n / n_eff`` (Rao-Scott,
    ``harness.analysis.data.popularity``), and the effective size picks the test.
    """
    if len(edges) != len(counts) + 1 or len(counts) != len(base_counts):
        raise ValueError(f"need len(edges) == len(counts) + 1 == len(base_counts) + 1 (got "
                         f"{len(edges)}, {len(counts)}, {len(base_counts)})")
    n, bn = int(round(sum(counts))), int(round(sum(base_counts)))
    warnings = []
    if min(n, bn) < drift.MIN_SAMPLE:
        warnings.append(f"{min(n, bn)} predictions on one side (< {drift.MIN_SAMPLE}): "
                        "no verdict")
    kl = drift.kl_divergence(counts, base_counts) if n and bn else 0.0
    js = drift.js_distance(counts, base_counts)
    p_value = None
    deff = design_effect(n, n_eff[0]) if n_eff else 1.0
    if min(n, bn) < drift.MIN_SAMPLE:
        shifted = None
    elif n / deff > drift.LARGE_SAMPLE:
        shifted = js >= drift.DISTANCE_THRESHOLD
    else:
        p_value = rao_scott_p(counts, base_counts, deff)
        shifted = p_value < drift.P_VALUE
    return PredictionShift(model, version, baseline, n, bn, kl, js,
                           drift.psi(base_counts, counts), _bin_mean(edges, counts),
                           _bin_mean(edges, base_counts), shifted, tuple(warnings), p_value,
                           min(float(n), n_eff[0]) if n_eff else None,
                           n_eff[1] if n_eff else None)


def homogeneity_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Chi-squared test that two binned samples share one distribution (empty bins dropped)."""
    return rao_scott_p(a, b, 1.0)


def run_predictions(run_dir: Path) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """(model, version) -> (bin edges from 0, counts) over the measured window, from metrics/."""
    end = read_scrape(run_dir, "end")
    if end is None:
        return {}
    out = {}
    for labels, (les, per) in histogram_delta(read_scrape(run_dir, "start"), end,
                                              PROBABILITY_METRIC).items():
        lab = dict(labels)
        finite = [le for le in les if math.isfinite(le)]
        counts = per[:len(finite)]
        counts[-1] += sum(per[len(finite):])  # +Inf holds nothing for probabilities
        out[(lab.get("model", "?"), lab.get("version", "?"))] = ([0.0, *finite], counts)
    return out


def null_rate_increases(now: Mapping[tuple[str, str], tuple[float, float]],
                        base: Mapping[tuple[str, str], float], label: str) -> list[dict[str, Any]]:
    """Features whose null rate after assembly rose materially above ``base``.

    ``now``: (model, feature) -> (null rows, rows) over the run's window; ``base``: the same
    key -> the baseline's null rate (a baseline run's, or training's). A rise counts when it
    is at least NULL_RATE_DELTA and a one-sided binomial test gives p < NULL_P_VALUE on at
    least drift.MIN_SAMPLE rows: an upstream change nulling a column, not a wobble.
    """
    out = []
    for (model, feature), (nulls, rows) in sorted(now.items()):
        if rows < drift.MIN_SAMPLE:
            continue
        ref = float(base.get((model, feature), 0.0))
        rate = nulls / rows
        if rate - ref < NULL_RATE_DELTA:
            continue
        p = sps.binomtest(int(nulls), int(rows), min(max(ref, 1e-6), 1 - 1e-6),
                          alternative="greater").pvalue
        if p < NULL_P_VALUE:
            out.append({"model": model, "feature": feature, "nulls": int(nulls),
                        "rows": int(rows), "null_rate": rate, "baseline_null_rate": ref,
                        "baseline": label, "p_value": float(p)})
    return out


@dataclass
class DataReport:
    """Everything ``harness data`` found; ``to_dict`` is what ``RUN/data.json`` holds."""

    run: str
    baseline: str
    features: list[FeatureCheck] = field(default_factory=list)
    predictions: list[PredictionShift] = field(default_factory=list)
    missing_features: dict[str, dict[str, float]] = field(default_factory=dict)
    null_features: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drift.drifted]

    @property
    def dataset_drift(self) -> bool | None:
        judged = [f for f in self.features if f.drift.drifted is not None]
        if not judged:
            return None
        return len(self.drifted) / len(judged) >= DATASET_DRIFT_SHARE

    def to_dict(self) -> dict[str, Any]:
        judged = sum(1 for f in self.features if f.drift.drifted is not None)
        return {"run": self.run, "baseline": self.baseline,
                "dataset_drift": self.dataset_drift, "drifted_features": self.drifted,
                "judged_features": judged, "features": [f.to_dict() for f in self.features],
                "predictions": [p.to_dict() for p in self.predictions],
                "missing_features": self.missing_features,
                "null_features": self.null_features, "traffic": self.traffic,
                "warnings": list(self.warnings)}

