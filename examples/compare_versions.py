"""Compare two model versions fairly: both served side by side, loaded in one run.

Each user alternates between version v1 and version v2 of the fraud model with the
same input, so whatever the machine does (another process, a GC pause, a CPU
frequency change) hits both versions alike. Compare them afterwards with:

    harness compare RUN --name-a "predict fraud v1" --name-b "predict fraud v2"

A plain locustfile: ``locust -f examples/compare_versions.py`` runs it too.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, constant, task

VERSIONS = ("v1", "v2")


class VersionPairUser(FastHttpUser):
    wait_time = constant(0.02)

    @task
    def predict_both(self) -> None:
        entity = random.randint(1, 100_000)
        body = {"instances": [{"entity_id": entity, "features": {"amount": 42.0}}]}
        # The order alternates at random so neither version always runs second
        # (a warm cache entry for the entity would otherwise favour one of them).
        for version in random.sample(VERSIONS, k=len(VERSIONS)):
            self.client.post(f"/v1/models/fraud/versions/{version}/predict", json=body,
                             name=f"predict fraud {version}")
