"""The Redis feature store: same answers as SQLite, and clear 503s when Redis is gone."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import parse_server_timing

BODIES = {
    ("fraud", "v1"): {"instances": [{"entity_id": i, "features": {"amount": 3.0 * i + 1}}
                                    for i in (0, 7, 99_999, 10**10)]},
    ("fraud", "v2"): {"instances": [{"entity_id": i, "features": {"amount": 50.0}}
                                    for i in (3, 12_345, 10**10)]},
    ("churn", "v1"): {"instances": [{"entity_id": i} for i in (1, 2, 54_321, 10**10)]},
    ("ranking", "v1"): {"instances": [{"entity_id": 8, "item_ids": [0, 17, 4_999, 10**8]},
                                      {"entity_id": 10**10, "item_ids": [5, 6]}]},
}


@pytest.fixture(scope="module")
def both(reference_service_module: Any, redis_server: Any) -> tuple[Any, Any]:
    sqlite = reference_service_module(workers=1)
    redis = reference_service_module(workers=2, store="redis", redis_url=redis_server.url)
    return sqlite, redis


@pytest.mark.parametrize("key", list(BODIES))
def test_redis_predictions_equal_sqlite(http, both, key):
    sqlite, redis = both
    name, version = key
    path = f"/v1/models/{name}/versions/{version}/predict"
    a = http("POST", sqlite.url + path, BODIES[key])
    b = http("POST", redis.url + path, BODIES[key])
    assert a.status == b.status == 200, (a.body, b.body)
    assert a.json()["predictions"] == b.json()["predictions"]
    st = parse_server_timing(b.headers["server-timing"])
    assert st["fetch"] + st["infer"] + st["serialize"] <= st["app"] + 0.0015


def test_redis_readyz_names_the_store(http, both, redis_server):
    ready = http("GET", both[1].url + "/readyz").json()
    assert ready["store"]["store"] == "redis" and ready["store"]["users"] >= 100_000


def test_redis_down_gives_503_not_500(http, reference_service):
    import redis

    from reference_service import redis_server as rs
    from reference_service.store.redis import META_KEY

    server = rs.start()
    try:
        # Only the load marker: entities are then unknown (200 with defaults) until Redis dies.
        redis.Redis.from_url(server.url).set(META_KEY, '{"users": 0, "items": 0}')
        svc = reference_service(workers=1, store="redis", redis_url=server.url)
        ok = http("POST", svc.url + "/v1/models/churn/predict", BODIES[("churn", "v1")])
        assert ok.status == 200
    finally:
        server.stop()
    r = http("POST", svc.url + "/v1/models/churn/predict", BODIES[("churn", "v1")])
    assert r.status == 503 and r.json()["error"] == "store_unavailable"
    ready = http("GET", svc.url + "/readyz")
    assert ready.status == 503 and "not reachable" in ready.json()["message"]


def test_empty_redis_is_not_ready(http, reference_service):
    from reference_service import redis_server as rs
    from reference_service.launch import ServiceNotReady, wait_ready

    server = rs.start()
    try:
        svc = reference_service(workers=1, store="redis", redis_url=server.url, wait=False)
        deadline = time.monotonic() + 60
        while True:  # wait until it listens: only readiness must fail, not the start
            assert svc.process.poll() is None and time.monotonic() < deadline, svc.log()
            try:
                if http("GET", svc.url + "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        with pytest.raises(ServiceNotReady, match="holds no feature table"):
            wait_ready(svc.url, 1.0)
    finally:
        server.stop()
