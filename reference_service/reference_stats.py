"""Training-time distributions saved beside the models, for drift checks on live traffic.

File format (``reference_stats.json``, ``schema_version`` 1)::

    {"schema_version": 1,
     "features": {
        "amount": {"kind": "numeric", "source": "request", "count": 150000, "null_rate": 0.0,
                   "mean": ..., "std": ..., "min": ..., "max": ...,
                   "quantiles": {"0.01": ..., "0.05": ..., ..., "0.99": ...},
                   "histogram": {"edges": [21 floats], "counts": [20 ints]}},
        "country": {"kind": "categorical", "source": "store", "count": ..., "null_rate": ...,
                    "frequencies": {"US": 0.35, ...}}},
     "models": {"fraud": {"v1": {"holdout_size": n, "probability": {
                    "mean": ..., "quantiles": {...},
                    "histogram": {"edges": [0, 0.05, ..., 1], "counts": [...]}}}}}}

Numeric histograms use 20 equal-width bins between the 0.5 % and 99.5 % quantiles, plus
the values outside them counted in the first/last bin, so a heavy tail does not squash
the bins. Frequencies are over non-null values and sum to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
BINS = 20


def numeric_stats(values: np.ndarray, source: str) -> dict[str, Any]:
    values = np.asarray(values, dtype=float)
    present = values[~np.isnan(values)]
    out: dict[str, Any] = {
        "kind": "numeric",
        "source": source,
        "count": int(values.size),
        "null_rate": float(1.0 - present.size / values.size) if values.size else 0.0,
    }
    if present.size == 0:
        return out
    qs = np.quantile(present, QUANTILES)
    lo, hi = np.quantile(present, [0.005, 0.995])
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, BINS + 1)
    counts, _ = np.histogram(np.clip(present, lo, hi), bins=edges)
    out.update(
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    )
    return out


def categorical_stats(codes: np.ndarray, categories: tuple[str, ...], source: str) -> dict:
    codes = np.asarray(codes, dtype=float)
    present = codes[~np.isnan(codes)].astype(int)
    counts = np.bincount(present, minlength=len(categories))
    total = max(int(counts.sum()), 1)
    return {
        "kind": "categorical",
        "source": source,
        "count": int(codes.size),
        "null_rate": float(1.0 - present.size / codes.size) if codes.size else 0.0,
        "frequencies": {c: float(n / total) for c, n in zip(categories, counts, strict=True)},
    }


def probability_stats(proba: np.ndarray) -> dict[str, Any]:
    proba = np.asarray(proba, dtype=float)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    counts, _ = np.histogram(proba, bins=edges)
    qs = np.quantile(proba, QUANTILES)
    return {
        "holdout_size": int(proba.size),
        "probability": {
            "mean": float(proba.mean()),
            "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        },
    }
