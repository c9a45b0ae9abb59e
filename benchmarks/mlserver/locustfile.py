"""Load an MLServer model over the Open Inference (V2) protocol, as an MLServer user would.

Each request posts one batch of float32 rows to ``POST /v2/models/<model>/infer``:

    {"inputs": [{"name": "predict", "shape": [B, F], "datatype": "FP32", "data": [...]}]}

and checks that the answer has one output with B rows. Plain Locust, nothing of the
harness: it runs as it is with

    locust -f benchmarks/mlserver/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 8 -t 30s --model-name rf --batch-size 8

and under ``harness run benchmarks/mlserver/locustfile.py --target URL ... -- --batch-size 8``.
Options (also environment variables): ``--model-name`` (MLSERVER_MODEL, default ``rf``),
``--batch-size`` (MLSERVER_BATCH, 8), ``--n-features`` (MLSERVER_FEATURES, 20: what
benchmarks/mlserver/train.py trains on), ``--data-seed`` (MLSERVER_DATA_SEED, 1).
"""

from __future__ import annotations

import itertools
import os
import random

from locust import FastHttpUser, constant, events, task

_POOL_SIZE = 64  # distinct request bodies per user, built once at start
_user_numbers = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--model-name", default=os.environ.get("MLSERVER_MODEL", "rf"),
                        help="MLServer model name (its model-settings.json 'name')")
    parser.add_argument("--batch-size", type=int,
                        default=int(os.environ.get("MLSERVER_BATCH", "8")),
                        help="rows per request")
    parser.add_argument("--n-features", type=int,
                        default=int(os.environ.get("MLSERVER_FEATURES", "20")),
                        help="float32 columns per row (the model's input width)")
    parser.add_argument("--data-seed", type=int,
                        default=int(os.environ.get("MLSERVER_DATA_SEED", "1")),
                        help="seed of the random feature values")


def v2_request(rows: list[list[float]]) -> dict:
    """An Open Inference Protocol request with one FP32 tensor named 'predict'."""
    width = len(rows[0]) if rows else 0
    return {"inputs": [{"name": "predict", "shape": [len(rows), width], "datatype": "FP32",
                        "data": [v for row in rows for v in row]}]}


class MLServerUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model = getattr(opts, "model_name", None) or os.environ.get("MLSERVER_MODEL", "rf")
        batch = int(getattr(opts, "batch_size", 8) or 8)
        width = int(getattr(opts, "n_features", 20) or 20)
        seed = int(getattr(opts, "data_seed", 1) or 0)
        if batch < 1 or width < 1:
            raise ValueError(f"batch size and features must be >= 1 (got {batch}, {width})")
        rng = random.Random(seed * 1_000_003 + next(_user_numbers))
        self.batch = batch
        self.bodies = [
            v2_request([[round(rng.gauss(0.0, 1.5), 4) for _ in range(width)]
                        for _ in range(batch)])
            for _ in range(_POOL_SIZE)
        ]
        self.path = f"/v2/models/{self.model}/infer"
        self.rng = rng

    @task
    def infer(self) -> None:
        body = self.bodies[self.rng.randrange(len(self.bodies))]
        with self.client.post(self.path, json=body, name=f"infer {self.model}",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                outputs = resp.json()["outputs"]
                rows = outputs[0]["shape"][0]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                resp.failure(f"not a V2 inference response: {exc!r}")
                return
            if rows != self.batch:
                resp.failure(f"expected {self.batch} predictions, got {rows}")
