"""A plain locustfile, written for Locust alone: the harness must run it unchanged."""

from __future__ import annotations

import random

from locust import FastHttpUser, constant, task


class FraudUser(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def predict(self) -> None:
        entity = random.randint(1, 100_000)
        body = {"instances": [{"entity_id": entity, "features": {"amount": 42.0}}]}
        self.client.post("/v1/models/fraud/predict", json=body, name="predict fraud")
