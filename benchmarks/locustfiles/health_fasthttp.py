"""The simplest load: GET /healthz from FastHttpUser with no wait. Used to compare the
load generator's own cost (bare Locust, the harness, wrk) on one endpoint."""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class Health(FastHttpUser):
    wait_time = constant(0)

    @task
    def health(self) -> None:
        self.client.get("/healthz", name="healthz")
