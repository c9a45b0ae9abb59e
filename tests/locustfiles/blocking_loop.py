"""A locustfile that blocks the load generator's event loop on purpose: after each request it
computes for ``BLOCK_MS`` without yielding (as a heavy synchronous request builder would),
so the other users wake late for their scheduled starts."""

from __future__ import annotations

import os
import time

from locust import HttpUser, constant, task

BLOCK_MS = float(os.environ.get("BLOCK_MS", "20"))


class BlockingUser(HttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        self.client.post("/predict", json={"x": 1}, name="predict")
        end = time.perf_counter() + BLOCK_MS / 1000
        while time.perf_counter() < end:  # no yield: the whole loop waits
            pass
