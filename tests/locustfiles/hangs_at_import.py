"""A locustfile that never finishes importing (it waits for a service that never comes)."""

from __future__ import annotations

import time

from locust import FastHttpUser, task

time.sleep(3600)


class NeverUser(FastHttpUser):
    @task
    def never(self) -> None:
        self.client.get("/")
