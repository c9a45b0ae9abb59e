"""Three request names in one run, for harness compare's tests (a plain locustfile).

``predict fraud v1 a`` and ``predict fraud v1 b`` are the same request under two names
(an A/A pair: any significant difference between them is a false alarm);
``predict fraud v2`` is the other model version, interleaved with them.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, constant, task


class ThreeNamesUser(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def predict(self) -> None:
        entity = random.randint(1, 100_000)
        body = {"instances": [{"entity_id": entity, "features": {"amount": 42.0}}]}
        calls = [("v1", "predict fraud v1 a"), ("v1", "predict fraud v1 b"),
                 ("v2", "predict fraud v2")]
        for version, name in random.sample(calls, k=len(calls)):
            self.client.post(f"/v1/models/fraud/versions/{version}/predict", json=body,
                             name=name)
