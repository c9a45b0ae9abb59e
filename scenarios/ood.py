"""Out-of-distribution traffic in named classes, mixed with production traffic at shares.

    locust -f scenarios/ood.py --headless -u 5 -r 5 -t 30s -H http://127.0.0.1:8000 \
        --ood-shares covariate_shift=0.2,null_features=0.2,unseen_categories=0.1
    SCENARIO_OOD_CLASSES=extreme_values,oversized_batch harness run scenarios/ood.py ...

Every request is tagged ``input_class=<class>`` (``production`` for the unchanged rest),
so the harness reports latency and errors per class. A 4xx the class expects (the service
refusing bad input: scenarios/ood_classes.py lists them) is a success tagged
``outcome=rejected``; an unexpected status is a failure. Options: docs/scenarios.md.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # plain `locust -f scenarios/ood.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import task

from scenarios import common
from scenarios.ood_classes import EXPECTED_REJECTIONS, make_ood, pick_class
from scenarios.options import COMMON, OOD, ood_shares

GROUPS = COMMON + OOD
ENV = common.setup(GROUPS)
if ENV["shape"] is not None:  # SCENARIO_SHAPE: a module-level shape, seen by any runner
    EnvShape = common.shape_class(ENV["shape"])


class OodUser(common.TrafficUser):
    groups = GROUPS

    def on_start(self) -> None:
        super().on_start()
        seed = self.values["traffic_seed"]
        self.class_rng = random.Random(f"ood:{seed}:{self.worker}:{self.index}")
        self.shares = ood_shares(self.values)

    @task
    def predict(self) -> None:
        cls = pick_class(self.class_rng, self.shares)
        common.send(self, make_ood(cls, self.stream), cls, EXPECTED_REJECTIONS[cls])
