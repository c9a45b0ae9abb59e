"""Inference, the ``infer`` stage: loading the verified model artifacts and predicting on
numpy arrays. The injected heavy paths run here so a profiler charges them to ``infer``."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reference_service.artifacts import load_pickle
from reference_service.faults import ModelFaults


@dataclass
class LoadedModel:
    """One model version ready to serve."""

    name: str
    version: str
    estimator: Any
    features: tuple[str, ...]
    threshold: float
    takes_items: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    # Training range per input column, for the out-of-range heavy path.
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probability per row."""
        return self.estimator.predict_proba(X)[:, 1]


def load_models(directory: Path, manifest: dict[str, Any]) -> dict[tuple[str, str], LoadedModel]:
    """Every model version of the manifest, each pickle checked against its sha256 first."""
    schema = manifest["features"]
    models = {}
    for name, entry in manifest["models"].items():
        for version, v in entry["versions"].items():
            features = tuple(v["features"])
            low = np.array([schema[f].get("min", -np.inf) for f in features], dtype=float)
            high = np.array([schema[f].get("max", np.inf) for f in features], dtype=float)
            models[(name, version)] = LoadedModel(
                name=name, version=version, estimator=load_pickle(directory, manifest,
                                                                  v["artifact"]),
                features=features, threshold=float(v.get("threshold", 0.5)),
                takes_items=entry.get("input") == "items", metrics=v.get("metrics", {}),
                low=low, high=high)
    return models


def burn_cpu(ms: float) -> None:
    """Spin on this thread's CPU for ``ms`` of CPU time (stands in for a heavy model path)."""
    end = time.thread_time() + ms / 1000.0
    x = 0.0
    while time.thread_time() < end:
        for i in range(200):
            x += i * 0.5


def heavy_paths(model: LoadedModel, X: np.ndarray, faults: ModelFaults,
                rng: random.Random) -> list[str]:
    """Injected extra inference cost: fixed, per row, and per out-of-range value."""
    fired = []
    cpu = faults.inference_cpu
    if cpu is not None and rng.random() < cpu.get("probability", 1.0):
        burn_cpu(cpu["ms"])
        fired.append("inference_cpu")
    scaling = faults.inference_scaling
    if scaling is not None and rng.random() < scaling.get("probability", 1.0):
        ms = scaling.get("per_row_ms", 0.0) * X.shape[0]
        if scaling.get("out_of_range_ms") and model.low is not None:
            with np.errstate(invalid="ignore"):
                outside = int(np.count_nonzero((X < model.low) | (X > model.high)))
            ms += scaling["out_of_range_ms"] * outside
        if ms > 0:
            burn_cpu(ms)
            fired.append("inference_scaling")
    return fired


def infer(model: LoadedModel, X: np.ndarray, faults: ModelFaults,
          rng: random.Random) -> tuple[np.ndarray, list[str]]:
    """Probabilities for the rows of ``X`` and the faults that fired."""
    fired = heavy_paths(model, X, faults, rng) if (
        faults.inference_cpu or faults.inference_scaling) else []
    return model.predict_proba(X), fired
