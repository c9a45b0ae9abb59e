"""GET in a loop (an idempotent request: geventhttpclient may retry it), for hostile targets."""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class GetUser(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def get(self) -> None:
        self.client.get("/v1/items/1", name="get item")
