"""The reference service under real gunicorn (2 sync workers) with the SQLite store."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import metric_value, parse_server_timing

FRAUD = {"instances": [{"entity_id": 42, "features": {"amount": 80.0}}]}
CHURN = {"instances": [{"entity_id": 42}]}
RANKING = {"instances": [{"entity_id": 42, "item_ids": [1, 2, 3, 4, 5]}]}
CASES = [
    ("fraud", "v1", FRAUD), ("fraud", "v2", FRAUD), ("churn", "v1", CHURN),
    ("ranking", "v1", RANKING),
]


@pytest.fixture(scope="module")
def svc(reference_service_module: Any) -> Any:
    return reference_service_module(workers=2)


def _predict(http: Any, svc: Any, model: str, body: Any, version: str | None = None) -> Any:
    path = f"/v1/models/{model}/versions/{version}/predict" if version else \
        f"/v1/models/{model}/predict"
    return http("POST", svc.url + path, body)


@pytest.mark.parametrize(("model", "version", "body"), CASES)
def test_every_model_and_version_predicts_with_server_timing(http, svc, model, version, body):
    r = _predict(http, svc, model, body, version)
    assert r.status == 200, r.body
    out = r.json()
    assert (out["model"], out["version"]) == (model, version)
    assert len(out["request_id"]) == 32
    pred = out["predictions"][0]
    assert pred["entity_found"] is True
    if model == "ranking":
        scores = [s["score"] for s in pred["scores"]]
        assert sorted(s["item_id"] for s in pred["scores"]) == [1, 2, 3, 4, 5]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    else:
        assert 0.0 < pred["probability"] < 1.0 and pred["label"] in (0, 1)
    st = parse_server_timing(r.headers["server-timing"])
    assert set(st) == {"fetch", "infer", "serialize", "app"}
    # Each value is rounded to 1 µs, so the rounded sum may exceed app by at most 1.5 µs.
    assert st["fetch"] + st["infer"] + st["serialize"] <= st["app"] + 0.0015
    assert st["infer"] > 0 and st["app"] > 0
    raw = r.headers["server-timing"]
    assert all(len(e.split("dur=")[1].split(".")[1]) == 3 for e in raw.split(","))


def test_default_version_and_body_version(http, svc):
    assert _predict(http, svc, "fraud", FRAUD).json()["version"] == "v1"
    r = _predict(http, svc, "fraud", {**FRAUD, "version": "v2"})
    assert r.json()["version"] == "v2"
    r = _predict(http, svc, "fraud", {**FRAUD, "version": "v1"}, version="v2")
    assert r.status == 422 and r.json()["field"] == "version"


def test_same_input_same_prediction_and_batch_matches_singles(http, svc):
    batch = {"instances": [{"entity_id": i, "features": {"amount": 10.0 * i}}
                           for i in range(1, 6)]}
    got = [p["probability"] for p in _predict(http, svc, "fraud", batch).json()["predictions"]]
    singles = [_predict(http, svc, "fraud", {"instances": [inst]}).json()["predictions"][0]
               ["probability"] for inst in batch["instances"]]
    assert got == singles


def test_unknown_entity_uses_training_defaults(http, svc):
    r = _predict(http, svc, "churn", {"instances": [{"entity_id": 10**12}]})
    assert r.status == 200
    assert r.json()["predictions"][0]["entity_found"] is False
    r = _predict(http, svc, "ranking", {"instances": [{"entity_id": 1, "item_ids": [10**9, 3]}]})
    assert r.json()["predictions"][0]["items_not_found"] == [10**9]


def test_raw_features_without_entity(http, svc, artifacts_dir):
    schema = json.loads((artifacts_dir / "manifest.json").read_text())["features"]
    feats = {n: schema[n]["default"] for n in json.loads(
        (artifacts_dir / "manifest.json").read_text())["models"]["churn"]["versions"]["v1"][
        "features"]}
    r = _predict(http, svc, "churn", {"instances": [{"features": feats}]})
    assert r.status == 200, r.body
    assert r.json()["predictions"][0]["entity_found"] is False


BAD_422 = [
    ({"instances": [{"entity_id": 1}]}, "instances[0].features.amount"),  # missing required
    ({"instances": [{"entity_id": 1, "features": {"amount": 1, "bogus": 2}}]},
     "instances[0].features.bogus"),
    ({"instances": [{"entity_id": 1, "features": {"amount": "12"}}]},
     "instances[0].features.amount"),
    ({"instances": [{"entity_id": 1, "features": {"amount": True}}]},
     "instances[0].features.amount"),
    ({"instances": [{"entity_id": 1, "features": {"amount": None}}]},
     "instances[0].features.amount"),
    ({"instances": [{"entity_id": 1, "features": {"amount": 5, "merchant_category": "x"}}]},
     "instances[0].features.merchant_category"),
    ({"instances": [{"entity_id": "7", "features": {"amount": 5}}]}, "instances[0].entity_id"),
    ({"instances": [{"entity_id": -1, "features": {"amount": 5}}]}, "instances[0].entity_id"),
    ({"instances": []}, "instances"),
    ({"instances": {"entity_id": 1}}, "instances"),
    ({"instances": [{"entity_id": 1, "features": {"amount": 5}}] * 257}, "instances"),
    ({"rows": []}, "rows"),
    ([1, 2], "body"),
    ({"instances": [{"features": {"amount": 5}}]}, "instances[0].features.account_age_days"),
    ({"instances": [{"entity_id": 1, "features": {"amount": 5}, "extra": 1}]},
     "instances[0].extra"),
]


@pytest.mark.parametrize(("body", "field"), BAD_422)
def test_schema_violations_are_422_naming_the_field(http, svc, body, field):
    r = _predict(http, svc, "fraud", body)
    assert r.status == 422, r.body
    err = r.json()
    assert err["error"] == "validation_error" and err["field"] == field
    assert field in err["message"]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_422(http, svc, token):
    body = b'{"instances": [{"entity_id": 1, "features": {"amount": ' + token + b"}}]}"
    r = _predict(http, svc, "fraud", body)
    assert r.status == 422 and r.json()["field"] == "instances[0].features.amount"
    assert "finite" in r.json()["message"]


def test_ranking_item_list_rules(http, svc):
    r = _predict(http, svc, "ranking", {"instances": [{"entity_id": 1}]})
    assert r.status == 422 and r.json()["field"] == "instances[0].item_ids"
    r = _predict(http, svc, "ranking", {"instances": [{"entity_id": 1,
                                                        "item_ids": list(range(201))}]})
    assert r.status == 422 and r.json()["field"] == "instances[0].item_ids"
    r = _predict(http, svc, "fraud", {"instances": [{"entity_id": 1, "item_ids": [1],
                                                      "features": {"amount": 1}}]})
    assert r.status == 422


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"instances": [1,]}'])
def test_malformed_json_is_400(http, svc, raw):
    r = _predict(http, svc, "fraud", raw)
    assert r.status == 400 and r.json()["error"] == "bad_json"


def test_unknown_model_version_route_are_json_404(http, svc):
    for path in ("/v1/models/nope/predict", "/v1/models/fraud/versions/v9/predict", "/nope"):
        r = http("POST", svc.url + path, FRAUD)
        assert r.status == 404 and r.json()["error"] == "not_found", path
    r = http("GET", svc.url + "/v1/models/fraud/predict")
    assert r.status == 405 and r.json()["error"] == "method_not_allowed"


def test_body_over_limit_is_413(http, svc):
    big = {"instances": [{"entity_id": 1, "features": {"amount": 1.0}}],
           "pad": "x" * (1 << 20)}
    r = _predict(http, svc, "fraud", big)
    assert r.status == 413 and r.json()["error"] == "too_large"


def test_admin_endpoint_absent_by_default(http, svc):
    for method in ("GET", "PUT", "DELETE"):
        r = http(method, svc.url + "/admin/faults", {"store_latency": {"ms": 5}},
                 headers={"Authorization": "Bearer anything"})
        assert r.status in (404, 405) and r.json()["error"] in ("not_found",
                                                                "method_not_allowed")


def test_info_endpoints(http, svc, artifacts_dir):
    assert http("GET", svc.url + "/healthz").json()["status"] == "ok"
    ready = http("GET", svc.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["store"]["store"] == "sqlite"
    assert ready["store"]["max_entity_id"] >= 99_999
    models = http("GET", svc.url + "/v1/models").json()
    assert set(models["models"]) == {"fraud", "churn", "ranking"}
    assert set(models["models"]["fraud"]["versions"]) == {"v1", "v2"}
    assert models["features"]["amount"]["required"] is True
    spec = http("GET", svc.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/models/{name}/predict" in spec["paths"]


def test_metrics_count_requests_across_both_workers(http, svc):
    before = http("GET", svc.url + "/metrics").body.decode()
    n = 60
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: _predict(http, svc, "churn", CHURN).status, range(n)))
    bad = _predict(http, svc, "churn", {"instances": [{"entity_id": "x"}]})
    assert statuses == [200] * n and bad.status == 422
    after = http("GET", svc.url + "/metrics").body.decode()

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("refsvc_requests_total", model="churn", version="v1", status="200") == n
    assert delta("refsvc_requests_total", model="churn", version="v1", status="422") == 1
    assert delta("refsvc_errors_total", kind="validation_error") == 1
    assert delta("refsvc_request_duration_seconds_count", model="churn", version="v1") == n
    assert delta("refsvc_stage_duration_seconds_count", model="churn", stage="infer") == n
    assert delta("refsvc_prediction_probability_count", model="churn") == n
    # both workers answered, so the total above really aggregates two processes
    prom = svc.env["PROMETHEUS_MULTIPROC_DIR"]
    import os

    pids = {f.split("_")[1].split(".")[0] for f in os.listdir(prom) if f.startswith("counter_")}
    assert {str(p) for p in svc.worker_pids()} <= pids


def test_probabilities_are_finite_over_many_entities(http, svc):
    body = {"instances": [{"entity_id": i * 997, "features": {"amount": 5.0 + i}}
                          for i in range(100)]}
    preds = _predict(http, svc, "fraud", body, "v2").json()["predictions"]
    assert all(math.isfinite(p["probability"]) for p in preds)
    assert all(p["entity_found"] for p in preds)
