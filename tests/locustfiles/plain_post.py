"""A locustfile as a user writes it: plain HttpUser, one POST, nothing harness-specific."""

from __future__ import annotations

from locust import HttpUser, constant, task


class PlainUser(HttpUser):
    wait_time = constant(0.005)

    @task
    def predict(self) -> None:
        self.client.post("/predict", json={"restaurant_id": 7, "items": 3}, name="predict")
