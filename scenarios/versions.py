"""Model versions side by side in one run: every input is sent to each version, interleaved.

    harness versions --serve reference --model fraud --versions v1,v2 --rate 20 --duration 60s
    locust -f scenarios/versions.py --headless -u 5 -r 5 -t 30s -H http://127.0.0.1:8000 \\
        --compare-model fraud --compare-versions v1,v2

Each task draws one production-like request for ``--compare-model`` from the traffic model
(scenarios/traffic.py) and sends the same body to every version of ``--compare-versions``
in a random order (so no version always runs first, with a cache warmed by the other),
through ``--compare-path`` (the reference service's versioned path by default). Requests
are named ``predict <model> <version>`` and tagged ``input_class=production``; whatever
the machine does hits every version alike, which is what ``harness versions`` compares.
In the open model the rate counts tasks: each sends one request per version.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # plain `locust -f scenarios/versions.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import task

from scenarios import common
from scenarios.options import COMMON, VERSIONS

GROUPS = COMMON + VERSIONS
ENV = common.setup(GROUPS, required=("compare_model",))
if ENV["shape"] is not None:  # SCENARIO_SHAPE: a module-level shape, seen by any runner
    EnvShape = common.shape_class(ENV["shape"])


class VersionsUser(common.TrafficUser):
    groups = GROUPS

    def on_start(self) -> None:
        super().on_start()
        seed = self.values["traffic_seed"]
        self.order_rng = random.Random(f"versions:{seed}:{self.worker}:{self.index}")
        model = self.values["compare_model"]
        template = self.values["compare_path"]
        self.targets = [(template.format(model=model, version=v), f"predict {model} {v}")
                        for v in self.values["compare_versions"]]

    @task
    def predict_every_version(self) -> None:
        req = self.stream.next(self.values["compare_model"])
        body = req.payload()
        for path, name in self.order_rng.sample(self.targets, k=len(self.targets)):
            common.send_raw(self, "POST", path, body, common.JSON_HEADERS, name, "production",
                            frozenset())
