"""Production-like traffic across all models of the reference service.

    locust -f scenarios/production.py --headless -u 10 -r 10 -t 30s -H http://127.0.0.1:8000
    harness run scenarios/production.py --serve reference --users 10 --duration 30s

Each user draws its own reproducible sequence from the shared traffic model
(scenarios/traffic.py): model by the mix, Zipf-popular entities, request features from the
training distributions. Requests are named ``predict <model>`` and tagged
``input_class=production``; any 4xx or 5xx is a failure. Options: docs/scenarios.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # plain `locust -f scenarios/production.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import task

from scenarios import common
from scenarios.options import COMMON

ENV = common.setup(COMMON)
if ENV["shape"] is not None:  # SCENARIO_SHAPE: a module-level shape, seen by any runner
    EnvShape = common.shape_class(ENV["shape"])


class ProductionUser(common.TrafficUser):
    groups = COMMON

    @task
    def predict(self) -> None:
        common.send(self, self.stream.next(), "production", frozenset())
