"""Train the reference models and build every artifact the service loads.

``python -m reference_service.train [--out DIR] [--entities N] [--items N] [--seed S]``

Writes into DIR (default ``$REFSVC_ARTIFACTS`` or ``<repo>/artifacts``): one pickle per
model version, ``features.sqlite`` (the online feature store), ``reference_stats.json``
(training distributions) and, last, ``manifest.json`` (sha256 of every artifact, models,
feature schema). Deterministic for a given seed and size.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
from pathlib import Path
from typing import Any

# Several workers share 2 cores in CI; OpenMP threads only add contention here.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_auc_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from reference_service import data, reference_stats  # noqa: E402
from reference_service.artifacts import (  # noqa: E402
    MANIFEST,
    MANIFEST_SCHEMA_VERSION,
    default_artifacts_dir,
    write_artifact_entry,
    write_json_atomic,
)
from reference_service.schema import (  # noqa: E402
    ALL_FEATURES,
    ITEM_FEATURES,
    REQUEST_FEATURES,
    USER_FEATURES,
    model_features,
)
from reference_service.store.sqlite import build_sqlite  # noqa: E402

MIN_ENTITIES = 1000
HOLDOUT = 0.2


def _matrix(columns: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([columns[n] for n in names]).astype(np.float64)


def _cat_mask(model: str, version: str) -> list[bool]:
    return [ALL_FEATURES[n].kind == "categorical" for n in model_features(model, version)]


def _hgb(model: str, version: str, **params: Any) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        categorical_features=_cat_mask(model, version), early_stopping=False, random_state=0,
        **params,
    )


def _churn_pipeline() -> Pipeline:
    mask = _cat_mask("churn", "v1")
    num = [i for i, c in enumerate(mask) if not c]
    cat = [i for i, c in enumerate(mask) if c]
    # Index-based columns: the service feeds numpy arrays, never DataFrames.
    pre = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")),
                          ("scale", StandardScaler())]), num),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), cat),
    ])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(C=1.0, max_iter=500))])


MODEL_SPECS: dict[str, dict[str, Any]] = {
    "fraud": {
        # v1: shallow and short; v2: deeper, longer, and two more input columns.
        "v1": lambda: _hgb("fraud", "v1", max_iter=200, learning_rate=0.1, max_depth=2),
        "v2": lambda: _hgb("fraud", "v2", max_iter=500, learning_rate=0.04, max_leaf_nodes=15,
                           min_samples_leaf=100),
    },
    "churn": {"v1": _churn_pipeline},
    "ranking": {"v1": lambda: _hgb("ranking", "v1", max_iter=120, learning_rate=0.1,
                                   max_leaf_nodes=31)},
}
DEFAULT_VERSIONS = {"fraud": "v1", "churn": "v1", "ranking": "v1"}


def _split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(n)
    cut = int(n * (1 - HOLDOUT))
    return idx[:cut], idx[cut:]


def build(out: Path, entities: int = 100_000, items: int = 5_000, seed: int = 7,
          log: Any = None) -> dict[str, Any]:
    """Train everything into ``out``; returns the manifest."""
    if entities < MIN_ENTITIES:
        raise ValueError(f"entities must be >= {MIN_ENTITIES} (got {entities})")
    if items < 10:
        raise ValueError(f"items must be >= 10 (got {items})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an interrupted build must not look complete
    say = log or (lambda msg: None)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    users = data.make_users(entities, rng)
    item_cols = data.make_items(items, rng)
    uid, req, y_fraud = data.make_transactions(users, int(entities * 1.5), rng)
    y_churn = data.churn_labels(users, rng)
    r_uid, r_iid, y_click = data.make_impressions(users, item_cols, entities * 2, rng)

    datasets = {
        "fraud": ({**{k: v[uid] for k, v in users.items()}, **req}, y_fraud),
        "churn": (users, y_churn),
        "ranking": ({**{k: v[r_uid] for k, v in users.items()},
                     **{k: v[r_iid] for k, v in item_cols.items()}}, y_click),
    }
    models: dict[str, Any] = {}
    stats_models: dict[str, Any] = {}
    for name, (cols, y) in datasets.items():
        train_idx, hold_idx = _split(len(y), rng)
        versions = {}
        stats_models[name] = {}
        for version, factory in MODEL_SPECS[name].items():
            t = time.perf_counter()
            X = _matrix(cols, model_features(name, version))
            est = factory().fit(X[train_idx], y[train_idx])
            proba = est.predict_proba(X[hold_idx])[:, 1]
            auc = float(roc_auc_score(y[hold_idx], proba))
            # Decision threshold: the max-F1 point on the holdout, since 0.5 would almost
            # never fire at a 3 % positive rate.
            prec, rec, thr = precision_recall_curve(y[hold_idx], proba)
            f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
            threshold = float(thr[int(np.argmax(f1))])
            artifact = f"{name}-{version}.pkl"
            with open(out / artifact, "wb") as fh:
                pickle.dump(est, fh, protocol=5)
            versions[version] = {
                "artifact": artifact,
                "features": list(model_features(name, version)),
                "estimator": type(est).__name__,
                "threshold": round(threshold, 6),
                "metrics": {"holdout_auc": round(auc, 5), "positive_rate": float(y.mean())},
                "train_rows": int(train_idx.size),
            }
            stats_models[name][version] = reference_stats.probability_stats(proba)
            say(f"trained {name} {version}: AUC {auc:.4f} in {time.perf_counter() - t:.1f} s")
        models[name] = {
            "default_version": DEFAULT_VERSIONS[name],
            "input": "items" if name == "ranking" else "entity",
            "versions": versions,
        }

    categories = {f.name: f.categories for f in ALL_FEATURES.values() if f.categories}
    build_sqlite(out / "features.sqlite", users, item_cols, categories)

    feature_stats: dict[str, Any] = {}
    schema: dict[str, Any] = {}
    sources = ((USER_FEATURES, users), (ITEM_FEATURES, item_cols), (REQUEST_FEATURES, req))
    for specs, cols in sources:
        for spec in specs:
            col = cols[spec.name]
            entry = spec.to_dict()
            if spec.categories is not None:
                st = reference_stats.categorical_stats(col, spec.categories, spec.source)
                entry["default"] = max(st["frequencies"], key=st["frequencies"].get)
            else:
                st = reference_stats.numeric_stats(col, spec.source)
                entry.update(default=st["quantiles"]["0.5"], min=st["min"], max=st["max"])
            feature_stats[spec.name] = st
            schema[spec.name] = entry
    write_json_atomic(out / "reference_stats.json", {
        "schema_version": 1, "seed": seed, "features": feature_stats, "models": stats_models,
    })

    artifact_names = [v["artifact"] for m in models.values() for v in m["versions"].values()]
    artifact_names += ["features.sqlite", "reference_stats.json"]
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created_by": "reference_service.train",
        "seed": seed,
        "artifacts": {a: write_artifact_entry(out, a) for a in artifact_names},
        "models": models,
        "features": schema,
        "store": {"sqlite": "features.sqlite", "entities": entities, "items": items,
                  "user_columns": [f.name for f in USER_FEATURES],
                  "item_columns": [f.name for f in ITEM_FEATURES]},
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(out / MANIFEST, manifest)
    say(f"wrote {len(artifact_names)} artifacts and {MANIFEST} to {out} "
        f"in {manifest['train_seconds']:.1f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the reference service's models.")
    parser.add_argument("--out", type=Path, default=None, help="artifacts directory")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        build(args.out or default_artifacts_dir(), args.entities, args.items, args.seed,
              log=lambda msg: print(msg, flush=True))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
