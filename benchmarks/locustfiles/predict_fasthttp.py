"""The reference service's default predict endpoint from FastHttpUser with no wait:
one fixed fraud request, so that every load generator sends the same bytes."""

from __future__ import annotations

from locust import FastHttpUser, constant, task

BODY = {"instances": [{"entity_id": 4242, "features": {"amount": 42.0}}]}


class Predict(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        self.client.post("/v1/models/fraud/predict", json=BODY, name="predict fraud")
