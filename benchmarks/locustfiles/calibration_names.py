"""Four request names with known latency distributions, interleaved in one run, for
benchmarks/compare_calibration.py against tests/known_latency_server.py.

Each request draws its delay here from a seeded lognormal (median 10 ms, sigma 0.5) and
asks the server for it with ``?delay_ms=``; the name says the factor applied:
``A`` and ``A2`` are the same distribution (an A/A pair), ``B10`` and ``B30`` are 10 %
and 30 % slower at every quantile. Interleaving puts every name under the same machine
conditions, so the comparison's only error is sampling, which is what is calibrated.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, constant, task

FACTORS = {"A": 1.0, "A2": 1.0, "B10": 1.1, "B30": 1.3}
MEDIAN_MS = 10.0
SIGMA = 0.5
_rng = random.Random(int(os.environ.get("CALIBRATION_SEED", "1")))


class CalibrationUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        name = _rng.choice(tuple(FACTORS))
        delay = _rng.lognormvariate(0.0, SIGMA) * MEDIAN_MS * FACTORS[name]
        self.client.get(f"/predict?delay_ms={delay:.3f}", name=name)
