"""Fuzzing the reference service: hypothesis property tests and schemathesis from its own
``/openapi.json``, against real gunicorn on 127.0.0.1.

The properties, for every generated request: no 5xx; every error is a JSON object with
``error`` and ``message`` strings (a 422 also names the ``field``); every 200 is strict JSON
(no NaN/Infinity) whose probabilities are finite and in [0, 1]; and afterwards the same
gunicorn workers are alive and the log holds no unhandled error. The tests together send
over 10,000 requests (each test asserts its own share; ``FUZZ_SCALE`` multiplies them for a
longer local run): 3,200 structured + 6,200 raw + ~680 schemathesis.
"""

from __future__ import annotations

import http.client
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
MAX_BATCH = 16


def fuzz_settings(examples: float) -> settings:
    return settings(max_examples=int(examples * SCALE), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


class Sent:
    """Counts requests per test, so each test can prove its share of the 10,000."""

    def __init__(self) -> None:
        self.n = 0


@pytest.fixture(scope="module")
def svc(reference_service_module: Any) -> Iterator[Any]:
    # A batch limit of 16: over-long batches are still fuzzed (and rejected), but the valid
    # ones stay cheap enough for 10,000 requests to fit a CI budget on 2 cores.
    service = reference_service_module(workers=2, env={"REFSVC_MAX_BATCH": str(MAX_BATCH)})
    workers = service.wait_for_workers(2)
    assert len(workers) == 2
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

HOSTILE = [
    0, -1, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 10**20, -(10**20), 10**400, 2**63,
    2**63 - 1, -(2**63), float("nan"), float("inf"), float("-inf"), 1e-300, None, True, "",
    "1.5", "x" * 300, [], [1, 2], {}, {"a": 1}, "\u0000", "\ud800",
]


class BodyMaker:
    """Prediction bodies near the valid ones: each part is valid most of the time and
    hostile (wrong type, huge, non-finite, unknown name) the rest.

    Hypothesis drives it through ``st.randoms()``: drawing whole nested bodies through
    hypothesis strategies costs ~11 ms per example, this costs ~0.05 ms, so the CI-sized
    run spends its time in the service, not in the generator.
    """

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.schema = manifest["features"]
        self.versions = {n: list(m["versions"]) for n, m in manifest["models"].items()}
        self.names = sorted(n for n, s in self.schema.items() if s["source"] != "item")

    def value(self, r: Any, spec: dict[str, Any]) -> Any:
        if r.random() < 0.2:
            return r.choice(HOSTILE)
        if spec["kind"] == "categorical":
            return r.choice(spec["categories"])
        return r.choice([r.uniform(-1e6, 1e6), r.randint(-10**6, 10**6), r.gauss(0, 100)])

    def instance(self, r: Any) -> Any:
        if r.random() < 0.03:
            return r.choice(HOSTILE)
        inst: dict[str, Any] = {}
        if r.random() < 0.8:
            inst["entity_id"] = r.randint(0, 120_000) if r.random() < 0.9 else r.choice(HOSTILE)
        if r.random() < 0.85:
            chosen = r.sample(self.names, r.randint(0, len(self.names)))
            feats = {n: self.value(r, self.schema[n]) for n in chosen}
            if r.random() < 0.05:
                feats[r.choice(["bogus", "", "amount ", "AMOUNT"])] = 1.0
            inst["features"] = feats if r.random() < 0.97 else r.choice(HOSTILE)
        if r.random() < 0.5:
            inst["item_ids"] = ([r.randint(0, 6000) for _ in range(r.randint(1, 10))]
                                if r.random() < 0.9 else r.choice(HOSTILE))
        if r.random() < 0.03:
            inst["extra"] = 1
        return inst

    def request(self, r: Any) -> tuple[str, Any]:
        model = r.choice([*self.versions, *self.versions, "nope", "fraud..", "FRAUD"])
        versions = [*self.versions.get(model, ["v1"]), "v9"]
        path = (f"/v1/models/{model}/predict" if r.random() < 0.6 else
                f"/v1/models/{model}/versions/{r.choice(versions)}/predict")
        n = r.choice([1, 1, 1, 2, 4]) if r.random() < 0.95 else \
            r.choice([0, MAX_BATCH + 1, 300])
        body: Any = {"instances": [self.instance(r) for _ in range(n)]}
        if r.random() < 0.2:
            body["version"] = r.choice(versions) if r.random() < 0.7 else r.choice(HOSTILE)
        if r.random() < 0.03:
            body["stray"] = 1
        if r.random() < 0.02:
            body = r.choice(HOSTILE)
        return path, body


PER_EXAMPLE = 8
JSON = {"Content-Type": "application/json"}
POOL = ThreadPoolExecutor(4)


def test_structured_predict_bodies_never_get_a_5xx(svc: Any, manifest: dict[str, Any]) -> None:
    maker = BodyMaker(manifest)
    sent = Sent()

    @fuzz_settings(3200 / PER_EXAMPLE)
    @given(r=st.randoms(use_true_random=False))
    def run(r: Any) -> None:
        # Python's encoder writes NaN/Infinity (and lone surrogates escaped), which a
        # lenient client may send: the service must reject them by rule, not crash.
        reqs = [(path, json.dumps(body).encode())
                for path, body in (maker.request(r) for _ in range(PER_EXAMPLE))]
        # Concurrent, so both workers are busy and the client's own time overlaps theirs.
        results = list(POOL.map(lambda pr: _request(svc.url, "POST", pr[0], pr[1], JSON), reqs))
        sent.n += len(results)
        for (path, raw), (status, headers, resp) in zip(reqs, results, strict=True):
            check_response(status, headers, resp, f"POST {path} {raw[:300]!r}")

    run()
    assert sent.n >= 3200 * SCALE


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

    @fuzz_settings(6200 / 4)
    @given(requests=st.lists(st.tuples(
        st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH"]), PATHS,
        RAW_BODIES, st.sampled_from(["application/json", "text/plain", "application/x-www-"
                                     "form-urlencoded", "multipart/form-data; boundary=x", ""]),
    ), min_size=4, max_size=4))
    def run(requests: list[tuple[str, str, bytes, str]]) -> None:
        def send(req: tuple[str, str, bytes, str]) -> tuple[int, dict[str, str], bytes]:
            method, path, body, ctype = req
            return _request(svc.url, method, path, body,
                            {"Content-Type": ctype} if ctype else {})

        results = list(POOL.map(send, requests))
        sent.n += len(results)
        for (method, path, body, ctype), (status, hdrs, resp) in zip(requests, results,
                                                                     strict=True):
            check_response(status, hdrs, resp, f"{method} {path} {ctype} {body[:200]!r}")

    run()
    assert sent.n >= 6200 * SCALE


def fuzz_operation(url: str, op: Any, mode: Any, examples: int, sent: Sent) -> None:
    @fuzz_settings(examples)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        resp = case.call(base_url=url, timeout=30)
        sent.n += 1
        headers = {k.lower(): v[0] if isinstance(v, list) else v
                   for k, v in resp.headers.items()}
        check_response(resp.status_code, headers, resp.content,
                       f"{op.method.upper()} {case.formatted_path} {case.body!r:.300}")

    run()


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

            # Positive cases are valid bodies, so each one runs the model: fewer of them.
            examples = 15 if not posts else 60 if mode is GenerationMode.POSITIVE else 250
            fuzz_operation(svc.url, op, mode, examples, sent)
    # Hypothesis may stop early when a GET's input space is exhausted.
    assert sent.n >= 2 * (60 + 250) * SCALE


def test_workers_survived_and_logged_no_unhandled_error(svc: Any) -> None:
    status, _, _ = _request(svc.url, "GET", "/healthz")
    assert status == 200
    log = svc.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
