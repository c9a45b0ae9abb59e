"""GET /predict from FastHttpUser, for tests/known_latency_server.py (benchmarks/accuracy.py).

Under the harness's open model the driver paces the task and ignores ``wait_time``; under
bare Locust ``KNOWN_USER_RPS`` (requests/s per user) paces it with Locust's own
``constant_throughput``, the way a Locust user asks for a rate.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant_throughput, task


class KnownGet(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("KNOWN_USER_RPS", "1")))

    @task
    def predict(self) -> None:
        self.client.get("/predict", name="predict")
