"""Fault injection under real gunicorn: each fault moves the stage it targets, runtime
changes reach every worker, and the admin endpoint is guarded by its token."""

from __future__ import annotations

import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import metric_value, parse_server_timing

TOKEN = "test-token-4f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAUD = {"instances": [{"entity_id": 42, "features": {"amount": 80.0}}]}
CHURN = {"instances": [{"entity_id": 42}]}


@pytest.fixture(scope="module")
def svc(reference_service_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    faults = tmp_path_factory.mktemp("faults") / "faults.yaml"
    faults.write_text("serialize_slow:\n  ms: 25\n  models: [churn]\n")
    return reference_service_module(workers=2, admin_token=TOKEN, faults=str(faults))


@pytest.fixture
def admin(http: Any, svc: Any) -> Any:
    def put(config: dict[str, Any]) -> Any:
        r = http("PUT", svc.url + "/admin/faults", config, headers=AUTH)
        assert r.status == 200, r.body
        return r

    yield put
    put({})


def _stages(http: Any, svc: Any, body: Any = FRAUD, model: str = "fraud", n: int = 6,
            parallel: int = 1) -> list[dict[str, float]]:
    def one(_: int) -> dict[str, float]:
        r = http("POST", f"{svc.url}/v1/models/{model}/predict", body)
        assert r.status == 200, r.body
        return parse_server_timing(r.headers["server-timing"])

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(n)))


def _median(stages: list[dict[str, float]], name: str) -> float:
    return statistics.median(s[name] for s in stages)


def test_start_config_applies_to_its_model_only(http, svc):
    churn = _stages(http, svc, CHURN, "churn", n=3)
    assert min(s["serialize"] for s in churn) >= 25.0  # CPU spin of 25 ms, a lower bound
    fraud = _stages(http, svc, n=3)
    assert _median(fraud, "serialize") < 5.0


def test_admin_rejects_missing_and_wrong_token(http, svc):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = http("PUT", svc.url + "/admin/faults", {"store_latency": {"ms": 50}},
                 headers=headers)
        assert r.status == 401 and r.json()["error"] == "unauthorized"
    assert TOKEN not in svc.log()
    r = http("GET", svc.url + "/admin/faults", headers=AUTH)
    assert r.status == 200 and "serialize_slow" in r.json()["faults"]


def test_admin_validates_the_config(http, svc):
    cases = [({"store_latency": {"ms": -1}}, "store_latency.ms"),
             ({"nope": {}}, "unknown fault kind"),
             ({"feature_null": {"features": ["not_a_feature"]}}, "unknown features"),
             ({"store_errors": {"rate": 2}}, "store_errors.rate")]
    for config, words in cases:
        r = http("PUT", svc.url + "/admin/faults", config, headers=AUTH)
        assert r.status == 422 and words in r.json()["message"], r.body
    r = http("PUT", svc.url + "/admin/faults", b"{oops", headers=AUTH)
    assert r.status == 400


def test_store_latency_shows_in_fetch_not_infer_on_all_workers(http, svc, admin):
    base = _stages(http, svc)
    admin({"store_latency": {"ms": 20}})
    slow = _stages(http, svc, n=16, parallel=4)
    assert min(s["fetch"] for s in slow) >= 20.0
    # infer does not carry the delay: its median moves far less than the 20 ms injected
    assert _median(slow, "infer") < _median(base, "infer") + 10.0
    prom = svc.env["PROMETHEUS_MULTIPROC_DIR"]
    from prometheus_client.multiprocess import MultiProcessCollector

    for pid in svc.worker_pids():
        path = os.path.join(prom, f"counter_{pid}.db")
        fired = sum(s.value for m in MultiProcessCollector.merge([path], accumulate=True)
                    for s in m.samples if s.name == "refsvc_faults_injected_total"
                    and s.labels.get("fault") == "store_latency")
        assert fired > 0, f"worker {pid} did not apply the runtime fault"


def test_store_latency_distribution_and_model_filter(http, svc, admin):
    admin({"store_latency": {"ms": 10, "ms_max": 30, "distribution": "uniform",
                             "models": ["churn"]}})
    churn = _stages(http, svc, CHURN, "churn", n=5)
    assert all(10.0 <= s["fetch"] for s in churn)
    assert _median(_stages(http, svc, n=3), "fetch") < 10.0


def test_store_errors_are_503(http, svc, admin):
    admin({"store_errors": {"rate": 1.0}})
    r = http("POST", svc.url + "/v1/models/fraud/predict", FRAUD)
    assert r.status == 503 and r.json()["error"] == "store_unavailable"
    assert "injected" in r.json()["message"]


def test_feature_null_and_rename_change_predictions(http, svc, admin):
    def proba() -> float:
        r = http("POST", svc.url + "/v1/models/fraud/predict", FRAUD)
        return r.json()["predictions"][0]["probability"]

    base = proba()
    admin({"feature_null": {"features": ["avg_amount_30d", "credit_score"]}})
    nulled = proba()
    admin({"feature_rename": {"renames": {"avg_amount_30d": "avg_amt_30d",
                                          "credit_score": "fico"}}})
    renamed = proba()
    metrics = http("GET", svc.url + "/metrics").body.decode()
    assert nulled != base and renamed == nulled  # a missing column is a null to the model
    assert metric_value(metrics, "refsvc_missing_features_total", model="fraud",
                        feature="credit_score") >= 1
    # The nulled request (before the rename) is counted as a null row of each feature.
    assert metric_value(metrics, "refsvc_null_features_total", model="fraud",
                        feature="avg_amount_30d") >= 1
    assert metric_value(metrics, "refsvc_feature_rows_total", model="fraud") >= 3


def test_inference_cpu_shows_in_infer_not_fetch(http, svc, admin):
    base = _stages(http, svc)
    admin({"inference_cpu": {"ms": 30}})
    heavy = _stages(http, svc)
    assert min(s["infer"] for s in heavy) >= 30.0
    assert _median(heavy, "fetch") < _median(base, "fetch") + 10.0


def test_inference_scaling_grows_with_rows_and_out_of_range(http, svc, admin):
    admin({"inference_scaling": {"per_row_ms": 2.0, "out_of_range_ms": 20.0}})
    one = _stages(http, svc, n=3)
    batch = {"instances": FRAUD["instances"] * 20}
    many = _stages(http, svc, batch, n=3)
    assert _median(many, "infer") >= _median(one, "infer") + 30.0  # 19 more rows x 2 ms
    odd = {"instances": [{"entity_id": 42, "features": {"amount": 1e9}}]}
    out = _stages(http, svc, odd, n=3)
    assert _median(out, "infer") >= _median(one, "infer") + 15.0


def test_serialize_slow_and_bloat_show_in_serialize(http, svc, admin):
    admin({"serialize_slow": {"ms": 20}, "serialize_bloat": {"kb": 512, "models": ["fraud"]}})
    r = http("POST", svc.url + "/v1/models/fraud/predict", FRAUD)
    st = parse_server_timing(r.headers["server-timing"])
    assert len(r.body) > 512 * 1024 and st["serialize"] >= 20.0
    assert st["infer"] < st["serialize"] + 50.0 and r.json()["predictions"]
