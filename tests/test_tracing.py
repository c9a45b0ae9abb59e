"""Optional OpenTelemetry tracing of the reference service: spans named like Server-Timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reference_service import tracing
from reference_service.app import create_app

BODY = {"instances": [{"entity_id": 7, "features": {"amount": 12.5}},
                      {"entity_id": 8, "features": {"amount": 99.0}}]}


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry refuses a second
    return exp


def _server_timing(header: str) -> dict[str, float]:
    return {p.split(";")[0].strip(): float(p.split("dur=")[1]) for p in header.split(",")}


def test_spans_per_stage_match_server_timing(exporter: InMemorySpanExporter,
                                             artifacts_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("REFSVC_TRACING", "on")
    try:
        client = create_app({"artifacts_dir": artifacts_dir}).test_client()
        exporter.clear()
        resp = client.post("/v1/models/fraud/predict", json=BODY)
        assert resp.status_code == 200
    finally:
        tracing.setup("off")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"app", "fetch", "infer", "serialize"}
    app = spans["app"]
    assert dict(app.attributes) == {"refsvc.model": "fraud", "refsvc.version": "v1",
                                    "refsvc.instances": 2, "refsvc.faults": ()}
    timing = _server_timing(resp.headers["Server-Timing"])
    for name in ("fetch", "infer", "serialize", "app"):
        span = spans[name]
        if name != "app":
            assert span.parent is not None and span.parent.span_id == app.context.span_id
            assert span.context.trace_id == app.context.trace_id
            assert app.start_time <= span.start_time <= span.end_time <= app.end_time
        # Same perf_counter marks; Server-Timing rounds to 1 µs, span times are integer ns.
        assert (span.end_time - span.start_time) / 1e6 == pytest.approx(timing[name],
                                                                         abs=0.0011)


def test_tracing_is_off_by_default_and_checks_its_mode(exporter: InMemorySpanExporter,
                                                       artifacts_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("REFSVC_TRACING", raising=False)
    client = create_app({"artifacts_dir": artifacts_dir}).test_client()
    exporter.clear()
    assert client.post("/v1/models/fraud/predict", json=BODY).status_code == 200
    assert not tracing.enabled() and exporter.get_finished_spans() == ()
    with pytest.raises(ValueError, match="REFSVC_TRACING must be one of"):
        tracing.setup("jaeger")


@pytest.mark.slow
def test_console_mode_under_gunicorn(reference_service, http,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFSVC_TRACING", "console")
    svc = reference_service(workers=1)
    assert http("POST", f"{svc.url}/v1/models/churn/predict",
                {"instances": [{"entity_id": 3}]}).status == 200
    svc.stop()
    log = svc.log()
    names = {json.loads(chunk)["name"] for chunk in _json_objects(log)}
    assert {"app", "fetch", "infer", "serialize"} <= names, log[-2000:]


def _json_objects(text: str) -> list[str]:
    """The pretty-printed JSON objects ConsoleSpanExporter writes, one per span."""
    out, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                chunk = text[start:i + 1]
                if '"trace_id"' in chunk:
                    out.append(chunk)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_mode_continues_traceparent_and_equals_server_timing(reference_service,
                                                                  protocol: str) -> None:
    """The reference service under gunicorn exporting OTLP to the harness's receiver: per
    request, the joined trace's server span and stages equal its Server-Timing values."""
    import os
    import time
    import urllib.request

    from harness.run.collectors.traces.join import JoinCounts, RequestRecord, join_request
    from harness.run.collectors.traces.receiver import OtlpReceiver
    from harness.run.collectors.traces.spanmap import load_span_map

    receiver = OtlpReceiver().start()
    try:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        svc = reference_service(env={"REFSVC_TRACING": "otlp",
                                     "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                     "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                                     "OTEL_BSP_SCHEDULE_DELAY": "100"})
        sent = []
        for _ in range(20):
            trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
            req = urllib.request.Request(
                svc.url + "/v1/models/fraud/predict", data=json.dumps(BODY).encode(),
                headers={"Content-Type": "application/json",
                         "traceparent": f"00-{trace_id}-{span_id}-01"}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                st = _server_timing(resp.headers["Server-Timing"])
            sent.append((RequestRecord(trace_id, span_id, "fraud", time.time(), 10**6, True), st))
        # 4 spans per request; the batch processor sends every 100 ms (bound: 30 s on a
        # busy machine, normally well under 1 s)
        deadline = time.monotonic() + 30
        while receiver.store.spans < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts, smap = JoinCounts(), load_span_map()
        for rec, st in sent:
            joined = join_request(rec, receiver.store.trace(rec.trace_id), smap, counts)
            assert joined is not None, counts.to_dict()
            # Server-Timing has 1 µs resolution (3 decimals of ms) and the spans come from
            # the same perf_counter marks: equal within rounding (2 µs)
            assert abs(joined.server_us - st["app"] * 1000) <= 2
            assert set(joined.stages_us) == {"fetch", "infer", "serialize"}
            for stage, us in joined.stages_us.items():
                assert abs(us - st[stage] * 1000) <= 2, (stage, us, st)
        assert counts.joined == 20
    finally:
        receiver.stop()
