"""Fuzzing the reference service: hypothesis property tests and schemathesis from its own
``/openapi.json``, against real gunicorn on 127.0.0.1.

The properties, for every generated request: no 5xx; every error is a JSON object with
``error`` and ``message`` strings (a 422 also names the ``field``); every 200 is strict JSON
(no NaN/Infinity) whose probabilities are finite and in [0, 1]; and afterwards the same
gunicorn workers are alive and the log holds no unhandled error. The tests together send
well over 10,000 requests (each test asserts its own share; ``FUZZ_SCALE`` multiplies them for a
longer local run).
"""

from __future__ import annotations

import http.client
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
MODELS = ("fraud", "churn", "ranking")


def fuzz_settings(examples: float) -> settings:
    return settings(max_examples=int(examples * SCALE), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


class Sent:
    """Counts requests per test, so each test can prove its share of the 10,000."""

    def __init__(self) -> None:
        self.n = 0


@pytest.fixture(scope="module")
def svc(reference_service_module: Any) -> Iterator[Any]:
    service = reference_service_module(workers=2)
    workers = sorted(service.worker_pids())
    yield service
    # Zero worker crashes: gunicorn replaces a dead worker with a new pid.
    assert sorted(service.worker_pids()) == workers, service.log()[-3000:]


def _request(url: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _strict_json(raw: bytes) -> Any:
    def reject(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token} in a response")

    return json.loads(raw, parse_constant=reject)


def check_response(status: int, headers: dict[str, str], raw: bytes, what: str) -> None:
    """The properties every response must have (see the module docstring)."""
    assert status < 500, f"{what} -> {status}: {raw[:500]!r}"
    ctype = headers.get("content-type", "")
    if status >= 400:
        assert ctype.startswith("application/json"), f"{what} -> {status} {ctype}: {raw[:300]!r}"
        body = _strict_json(raw)
        assert isinstance(body, dict), f"{what} -> {status}: {raw[:300]!r}"
        assert isinstance(body.get("error"), str) and body["error"], f"{what}: {body}"
        assert isinstance(body.get("message"), str) and body["message"], f"{what}: {body}"
        if status == 422:
            # The field may be the empty string: a body can have a key "".
            assert isinstance(body.get("field"), str), f"{what}: {body}"
        return
    if ctype.startswith("application/json"):
        body = _strict_json(raw)
        for pred in body.get("predictions", []) if isinstance(body, dict) else []:
            values = [pred["probability"]] if "probability" in pred else \
                [s["score"] for s in pred["scores"]]
            assert all(math.isfinite(v) and 0 <= v <= 1 for v in values), f"{what}: {pred}"


@pytest.fixture(scope="module")
def manifest(artifacts_dir: Path) -> dict[str, Any]:
    return json.loads((artifacts_dir / "manifest.json").read_text())


# -- values: mostly plausible, often hostile ------------------------------------------------

HOSTILE_NUMBERS = st.sampled_from([
    0, -1, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 10**20, -(10**20), 10**400, 2**63,
    2**63 - 1, -(2**63), float("nan"), float("inf"), float("-inf"), 1e-300,
])
JUNK = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), HOSTILE_NUMBERS,
)


def feature_value(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    if spec["kind"] == "categorical":
        good: st.SearchStrategy[Any] = st.sampled_from(spec["categories"])
    else:
        good = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-10**6, 10**6))
    return st.one_of(good, good, good, HOSTILE_NUMBERS, JUNK)


@st.composite
def predict_request(draw: st.DrawFn, manifest: dict[str, Any]) -> tuple[str, Any]:
    schema = manifest["features"]
    model = draw(st.sampled_from([*MODELS, *MODELS, "nope", "fraud/../churn"]))
    versions = list(manifest["models"].get(model, {}).get("versions", {"v1": {}}))
    names = sorted(n for n, s in schema.items() if s["source"] != "item")

    def instance() -> st.SearchStrategy[dict[str, Any]]:
        features = st.fixed_dictionaries({}, optional={
            n: feature_value(schema[n]) for n in names} | {"bogus": JUNK})
        return st.fixed_dictionaries({}, optional={
            "entity_id": st.one_of(st.integers(0, 120_000), HOSTILE_NUMBERS, JUNK),
            "features": st.one_of(features, features, features, JUNK),
            "item_ids": st.one_of(st.lists(st.integers(0, 6000), min_size=1, max_size=30),
                                  st.lists(HOSTILE_NUMBERS, max_size=3), JUNK),
            "extra": JUNK,
        })

    body = draw(st.fixed_dictionaries(
        {"instances": st.one_of(st.lists(instance(), min_size=1, max_size=4),
                                st.lists(instance(), max_size=0), JUNK)},
        optional={"version": st.one_of(st.sampled_from([*versions, "v9"]), JUNK),
                  "stray": JUNK}))
    if draw(st.booleans()):
        path = f"/v1/models/{model}/predict"
    else:
        path = f"/v1/models/{model}/versions/{draw(st.sampled_from([*versions, 'v9']))}/predict"
    return path, body


def test_structured_predict_bodies_never_get_a_5xx(svc: Any, manifest: dict[str, Any]) -> None:
    sent = Sent()

    @fuzz_settings(4000)
    @given(req=predict_request(manifest))
    def run(req: tuple[str, Any]) -> None:
        path, body = req
        # allow_nan: Python's encoder writes NaN/Infinity, which a lenient client may send.
        raw = json.dumps(body).encode()
        status, headers, resp = _request(svc.url, "POST", path, raw,
                                         {"Content-Type": "application/json"})
        sent.n += 1
        check_response(status, headers, resp, f"POST {path} {raw[:300]!r}")

    run()
    assert sent.n >= 4000 * SCALE


RAW_BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda kids: st.lists(kids, max_size=4) |
                 st.dictionaries(st.text(max_size=8), kids, max_size=4),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b'{"instances": [', b'{"instances": [{"entity_id": 1}]', b"[" * 100_000,
                     b'{"instances": [{"entity_id": 1, "features": {"amount": 1e999}}]}',
                     b'{"instances": [{"entity_id": 1, "features": {"amount": NaN}}]}',
                     '{"instances": [{"entity_id": 1, "features": {"amount": 1}}]}'
                     .encode("utf-16"), b"\xff\xfe\x00", b"null", b"0"]),
)
PATHS = st.one_of(
    st.sampled_from(["/v1/models/fraud/predict", "/v1/models/churn/predict",
                     "/v1/models/ranking/predict", "/v1/models/fraud/versions/v2/predict",
                     "/v1/models", "/healthz", "/readyz", "/openapi.json", "/admin/faults",
                     "/v1/models/fraud/predict?x=1", "/v1/models/%00/predict", "/nope",
                     "/v1/models/%ff%fe/predict", "//v1//models"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="#?%"),
            max_size=30).map(lambda s: "/v1/models/" + s + "/predict"),
)


def test_raw_bytes_any_path_any_method_never_get_a_5xx(svc: Any) -> None:
    sent = Sent()

    @fuzz_settings(2500)
    @given(method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH"]),
           path=PATHS, body=RAW_BODIES,
           ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-"
                                  "urlencoded", "multipart/form-data; boundary=x", ""]))
    def run(method: str, path: str, body: bytes, ctype: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        status, hdrs, resp = _request(svc.url, method, path, body, headers)
        sent.n += 1
        check_response(status, hdrs, resp, f"{method} {path} {ctype} {body[:200]!r}")

    run()
    assert sent.n >= 2500 * SCALE


def test_schemathesis_from_the_services_openapi(svc: Any) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(svc.url + "/openapi.json")
    sent = Sent()
    operations = [r.ok() for r in schema.get_all_operations()]
    # Every documented path but /openapi.json itself, which schemathesis leaves out.
    assert len(operations) == 6
    for op in operations:
        posts = op.method.upper() == "POST"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if not posts and mode is GenerationMode.NEGATIVE:
                continue  # the GET endpoints take no input to get wrong

            @fuzz_settings(900 if posts else 15)
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any, op: Any = op) -> None:
                resp = case.call(base_url=svc.url, timeout=30)
                sent.n += 1
                headers = {k.lower(): v[0] if isinstance(v, list) else v
                           for k, v in resp.headers.items()}
                check_response(resp.status_code, headers, resp.content,
                               f"{op.method.upper()} {case.formatted_path} {case.body!r:.300}")

            run()
    assert sent.n >= (4 * 900 + 4 * 15) * SCALE * 0.9  # hypothesis may stop early on a tiny space


def test_workers_survived_and_logged_no_unhandled_error(svc: Any) -> None:
    status, _, _ = _request(svc.url, "GET", "/healthz")
    assert status == 200
    log = svc.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
