"""Train the benchmark's scikit-learn model and save it with joblib for MLServer.

Runs with the MLServer virtualenv's interpreter (benchmarks/mlserver_target.py calls
it there), so the pickle is written by the same scikit-learn that MLServer loads it
with. A RandomForest on a synthetic dataset: one prediction of a small batch costs a
few milliseconds of CPU in sklearn's per-tree loop (the numbers are printed).

    .venv-mlserver/bin/python benchmarks/mlserver/train.py OUT/model.joblib
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

# Shared with the locustfile: a request carries FEATURES float32 columns.
FEATURES = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write model.joblib")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--trees", type=int, default=60)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    x, y = make_classification(n_samples=args.samples, n_features=FEATURES,
                               n_informative=12, n_redundant=4, random_state=args.seed)
    started = time.perf_counter()
    model = RandomForestClassifier(n_estimators=args.trees, max_depth=args.max_depth,
                                   random_state=args.seed, n_jobs=1)
    model.fit(x, y)
    train_s = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out)

    # What one request's inference costs, outside any server (batch of 8 rows).
    batch = x[:8].astype(np.float32)
    model.predict(batch)
    reps = 50
    started = time.perf_counter()
    for _ in range(reps):
        model.predict(batch)
    predict_ms = (time.perf_counter() - started) / reps * 1000
    info = {
        "model": "RandomForestClassifier", "trees": args.trees, "max_depth": args.max_depth,
        "features": FEATURES, "samples": args.samples, "train_s": round(train_s, 2),
        "predict_ms_batch8": round(predict_ms, 3), "sklearn": sklearn.__version__,
        "numpy": np.__version__, "accuracy_train": round(float(model.score(x, y)), 4),
    }
    (args.out.parent / "train.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
