"""Load for the delivery-ETA service, written the way its team would write it.

    locust -f examples/fastapi_service/locustfile.py --headless -u 4 -r 4 -t 30s \
        --host http://127.0.0.1:8080

Two kinds of traffic, like the app's: the order page asks the ETA of one restaurant, the
home screen asks for a list of nearby restaurants at once. Restaurants are picked with a
Zipf-like popularity (a few get most of the traffic), restaurant 1 the most popular.

Environment: ``FASTSVC_ENTITIES`` (restaurants in the store, default 20000),
``FASTSVC_ZIPF`` (popularity exponent, default 1.1), ``FASTSVC_MODEL_VERSION`` (pin a
version; default: let the service choose).
"""

from __future__ import annotations

import itertools
import os
import random

from locust import FastHttpUser, between, task

ENTITIES = int(os.environ.get("FASTSVC_ENTITIES", "20000"))
EXPONENT = float(os.environ.get("FASTSVC_ZIPF", "1.1"))
VERSION = os.environ.get("FASTSVC_MODEL_VERSION") or None

IDS = range(1, ENTITIES + 1)
# Cumulative weights once, so each draw is a bisect rather than a pass over 20k weights.
CUM_WEIGHTS = list(itertools.accumulate(1.0 / rank ** EXPONENT for rank in IDS))


def restaurants(k: int) -> list[int]:
    return random.choices(IDS, cum_weights=CUM_WEIGHTS, k=k)


def instance(restaurant_id: int) -> dict[str, object]:
    return {
        "restaurant_id": restaurant_id,
        "distance_km": round(random.gammavariate(2.0, 1.6), 2),
        "basket_items": random.randint(1, 8),
        "hour_of_day": random.randint(0, 23),
        "day_of_week": random.randint(0, 6),
    }


class AppUser(FastHttpUser):
    wait_time = between(0.0, 0.02)

    def _predict(self, ids: list[int], name: str) -> None:
        body: dict[str, object] = {"instances": [instance(i) for i in ids]}
        if VERSION:
            body["model_version"] = VERSION
        with self.client.post("/predict", json=body, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
            elif len(resp.json().get("predictions", [])) != len(ids):
                resp.failure("wrong number of predictions")

    @task(6)
    def order_page(self) -> None:
        self._predict(restaurants(1), "/predict [order page]")

    @task(3)
    def home_screen(self) -> None:
        self._predict(restaurants(random.randint(5, 20)), "/predict [home screen]")
