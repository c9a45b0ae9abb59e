"""Train the delivery-ETA models and write the artifacts the service loads.

    python -m examples.fastapi_service.train --out artifacts/fastapi_service

Writes into OUT: ``restaurants.csv`` (the entity features the loader puts into Redis or
SQLite), ``eta_v1.joblib`` and ``eta_v2.joblib`` and, last, ``manifest.json`` (what each
file is, its sha256, the feature order, holdout error and the default version). A few
seconds on one core; deterministic for a given seed and size.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any

# The training and the service's small-batch predictions gain nothing from OpenMP threads
# on a 2-core machine and lose a lot when it is busy (measured: v1 fit 0.25 s with one
# thread, 6.8 s with two on a loaded machine). Set before sklearn loads its runtime.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402
from sklearn.metrics import mean_absolute_error  # noqa: E402

from examples.fastapi_service import dataset  # noqa: E402
from examples.fastapi_service.artifacts import (  # noqa: E402
    MANIFEST_VERSION,
    sha256,
    write_manifest,
)
from examples.fastapi_service.features import ENTITY, REQUEST_FEATURES, STORE_FEATURES  # noqa: E402

MODEL_NAME = "delivery_eta"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "artifacts" / "fastapi_service"
# v1 is the light model in production; v2 is the candidate: ten times the trees, each
# bigger, a little more accurate and several times slower per prediction (per-tree cost
# dominates small batches: ~0.4 ms vs ~4 ms for 1-20 rows on one core here).
VERSIONS: dict[str, dict[str, Any]] = {
    "v1": {"max_iter": 60, "max_depth": 5, "learning_rate": 0.15},
    "v2": {"max_iter": 600, "max_leaf_nodes": 63, "learning_rate": 0.04},
}
DEFAULT_VERSION = "v1"
HOLDOUT = 0.2


def write_restaurants(path: Path, restaurants: dataset.Restaurants) -> None:
    """CSV with an empty cell for a null: what an upstream export usually looks like."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([ENTITY, *STORE_FEATURES])
        for entity, row in zip(restaurants.ids.tolist(), restaurants.features.tolist(),
                               strict=True):
            writer.writerow([entity, *("" if np.isnan(v) else repr(round(v, 4)) for v in row)])


def build(out: Path, entities: int = 20_000, orders: int = 40_000, seed: int = 7
          ) -> dict[str, Any]:
    """Train both versions into ``out`` and return the manifest written there."""
    if entities < 100:
        raise ValueError(f"entities must be >= 100 (got {entities})")
    if orders < 1000:
        raise ValueError(f"orders must be >= 1000 (got {orders})")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    restaurants = dataset.make_restaurants(entities, rng)
    x, y = dataset.make_training_set(restaurants, orders, rng)
    split = int(len(y) * (1 - HOLDOUT))
    write_restaurants(out / "restaurants.csv", restaurants)
    versions: dict[str, Any] = {}
    for version, params in VERSIONS.items():
        model = HistGradientBoostingRegressor(early_stopping=False, random_state=0, **params)
        t0 = time.perf_counter()
        model.fit(x[:split], y[:split])
        fit_s = time.perf_counter() - t0
        mae = float(mean_absolute_error(y[split:], model.predict(x[split:])))
        path = out / f"eta_{version}.joblib"
        joblib.dump(model, path)
        versions[version] = {"file": path.name, "sha256": sha256(path),
                             "estimator": type(model).__name__, "params": params,
                             "holdout_mae_minutes": round(mae, 3),
                             "fit_seconds": round(fit_s, 2)}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model": MODEL_NAME,
        "entity": {"name": ENTITY, "count": entities, "file": "restaurants.csv",
                   "sha256": sha256(out / "restaurants.csv")},
        "store_features": list(STORE_FEATURES),
        "request_features": list(REQUEST_FEATURES),
        "versions": versions,
        "default_version": DEFAULT_VERSION,
        "seed": seed,
        "training_rows": split,
        "sklearn_version": sklearn.__version__,
    }
    write_manifest(out, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the delivery-ETA models (v1, v2).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"artifacts directory (default: {DEFAULT_OUT})")
    parser.add_argument("--entities", type=int, default=20_000, help="restaurants")
    parser.add_argument("--orders", type=int, default=40_000, help="training + holdout rows")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifest = build(args.out, args.entities, args.orders, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    maes = ", ".join(f"{v} MAE {m['holdout_mae_minutes']} min"
                     for v, m in manifest["versions"].items())
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s ({maes})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
