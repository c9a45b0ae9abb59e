"""The OTLP receiver against the real OpenTelemetry SDK exporters (gRPC and HTTP), OTLP/JSON,
and hostile payloads; the span map and the join by value on constructed spans."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness.run.collectors.traces.collector import TracesCollector, TracesOptions
from harness.run.collectors.traces.join import (
    JoinCounts,
    RequestRecord,
    join_request,
    stage_times_ns,
)
from harness.run.collectors.traces.receiver import OtlpReceiver, ReceiverError, parse_listen
from harness.run.collectors.traces.spanmap import load_span_map
from harness.run.collectors.traces.spans import Span, SpanStore

TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT = "b7ad6b7169203331"


def _sdk_spans(exporter: Any, trace_id: int, parent_span_id: int) -> None:
    """One server span continuing the given context, with a redis child and a predict child,
    exported through ``exporter`` (the SDK's, synchronously)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id, parent_span_id, is_remote=True, trace_flags=TraceFlags(1))))
    t0 = time.time_ns()
    server = tracer.start_span("POST /predict", context=parent, kind=SpanKind.SERVER,
                               start_time=t0)
    ctx = trace.set_span_in_context(server)
    tracer.start_span("HMGET", context=ctx, kind=SpanKind.CLIENT, start_time=t0 + 1_000_000,
                      attributes={"db.system": "redis"}).end(end_time=t0 + 3_000_000)
    tracer.start_span("predict", context=ctx, start_time=t0 + 3_000_000).end(
        end_time=t0 + 7_000_000)
    server.end(end_time=t0 + 8_000_000)
    provider.shutdown()


@pytest.fixture()
def receiver():
    r = OtlpReceiver(max_body=1_000_000).start()
    yield r
    r.stop()


def _wait_spans(store: SpanStore, n: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.spans < n and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_exporters_deliver_spans_that_join(receiver: OtlpReceiver, protocol: str) -> None:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces")
    _sdk_spans(exporter, int(TRACE, 16), int(CLIENT, 16))
    _wait_spans(receiver.store, 3)
    spans = receiver.store.trace(TRACE)
    assert sorted(s.name for s in spans) == ["HMGET", "POST /predict", "predict"]
    server = next(s for s in spans if s.name == "POST /predict")
    assert (server.kind, server.parent_id, server.service) == ("server", CLIENT, "svc")
    assert server.end_ns - server.start_ns == 8_000_000
    rec = RequestRecord(TRACE, CLIENT, "POST predict", time.time(), 9_500, True)
    counts = JoinCounts()
    joined = join_request(rec, spans, load_span_map(), counts)
    assert joined is not None
    # exact: the SDK carries nanosecond timestamps, the join rounds to µs
    assert (joined.server_us, joined.stages_us, joined.residual_us) == \
        (8000, {"fetch": 2000, "infer": 4000}, 1500)
    assert counts.to_dict()["joined"] == 1


def test_the_wait_for_late_spans_lasts_until_each_server_span_arrived() -> None:
    """A batch processor exports a request's inner spans as soon as a batch is full, and its
    server span, which ends last, only at its next interval. The collector must wait for
    the server span, not for any span of the trace: before, a trace counted as arrived
    with its first span, and MLServer lost 7 requests of 4813 that way (issue 15), plus 75
    whose last batch came after the 2 s of quiet the wait then allowed."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    # the OpenTelemetry SDK's default export interval (OTEL_BSP_SCHEDULE_DELAY) is 5 s: the
    # quiet time that ends the wait must be longer, or the last batch is always lost
    assert TracesOptions().quiet_s > 5.0
    collector = TracesCollector(TracesOptions(grace_s=20.0))
    collector.receiver.start()
    # 2 s between the inner spans' batch and the server span's: a stalled machine would
    # need to hold this thread for 2 s between two lines for the first assertion to fail
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=collector.receiver.http_endpoint + "/v1/traces"),
        max_export_batch_size=2, schedule_delay_millis=2000))
    try:
        tracer = provider.get_tracer("t")
        parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            int(TRACE, 16), int(CLIENT, 16), is_remote=True, trace_flags=TraceFlags(1))))
        server = tracer.start_span("POST /predict", context=parent, kind=SpanKind.SERVER)
        ctx = trace.set_span_in_context(server)
        tracer.start_span("HMGET", context=ctx, kind=SpanKind.CLIENT).end()
        tracer.start_span("predict", context=ctx).end()  # a full batch: exported now
        server.end()                                      # queued until the interval
        store = collector.receiver.store
        _wait_spans(store, 2)
        assert store.trace_ids() == {TRACE} and store.without_child({CLIENT}) == {CLIENT}
        waited = collector._wait_for_spans({CLIENT})
        assert store.without_child({CLIENT}) == set() and store.spans == 3
        assert waited < 20.0  # it ended on the arrival, not on the grace
        counts = JoinCounts()
        assert join_request(RequestRecord(TRACE, CLIENT, "n", 0.0, 10**6, True),
                            store.trace(TRACE), load_span_map(), counts) is not None
        assert counts.joined == 1
    finally:
        provider.shutdown()
        collector.receiver.stop()


def test_asgi_receive_and_send_spans_have_no_stage(receiver: OtlpReceiver) -> None:
    """FastAPI's (ASGI) instrumentation wraps every receive() and send() in a span named
    after the route: on MLServer "POST /v2/models/{model_name}/infer http send", which the
    name rules would take for inference. Their attribute survives decoding, and the default
    map gives them no stage: their time stays the server span's own."""
    route = "POST /v2/models/{model_name}/infer"
    doc = _otlp_json(TRACE)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
        {"traceId": TRACE, "spanId": "0000000000000009", "parentSpanId": "0000000000000001",
         "name": f"{route} http send", "kind": 1, "startTimeUnixNano": "2000",
         "endTimeUnixNano": "3000", "attributes": [
             {"key": "asgi.event.type", "value": {"stringValue": "http.response.start"}}]})
    url = receiver.http_endpoint + "/v1/traces"
    assert _post(url, json.dumps(doc).encode(), "application/json") == 200
    _wait_spans(receiver.store, 2)
    send = next(s for s in receiver.store.trace(TRACE) if s.span_id == "0000000000000009")
    assert send.attributes == {"asgi.event.type": "http.response.start"}
    smap = load_span_map()
    assert smap.stage_of(send) is None
    # older instrumentations, without the attribute: by the name
    for name in (f"{route} http receive", "POST /predict http send"):
        assert smap.stage_of(_span("1" * 16, "", name, 0, 1)) is None
    assert smap.stage_of(_span("1" * 16, "", "predict", 0, 1)) == "infer"
    server = _span("s" * 16, CLIENT, route, 0, 100_000, "server")
    spans = [server,
             _span("a" * 16, server.span_id, f"{route} http receive", 0, 5_000,
                   **{"asgi.event.type": "http.request"}),
             _span("p" * 16, server.span_id, "predict", 10_000, 60_000),
             _span("b" * 16, server.span_id, f"{route} http send", 90_000, 95_000,
                   **{"asgi.event.type": "http.response.body"})]
    assert stage_times_ns(server, spans, smap) == {"infer": 50_000}


def _otlp_json(trace_hex: str, n: int = 1) -> dict[str, Any]:
    spans = [{"traceId": trace_hex, "spanId": f"{i + 1:016x}", "parentSpanId": CLIENT,
              "name": f"s{i}", "kind": 2, "startTimeUnixNano": "1000",
              "endTimeUnixNano": str(1000 + 5000 * (i + 1)),
              "attributes": [{"key": "http.route", "value": {"stringValue": "/p"}}]}
             for i in range(n)]
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "js"}}]},
        "scopeSpans": [{"spans": spans}]}]}


def _post(url: str, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": ctype, **(extra or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_otlp_json_with_hex_ids_and_gzip(receiver: OtlpReceiver) -> None:
    url = receiver.http_endpoint + "/v1/traces"
    assert _post(url, json.dumps(_otlp_json(TRACE)).encode(), "application/json") == 200
    body = gzip.compress(json.dumps(_otlp_json("1" * 32, 2)).encode())
    assert _post(url, body, "application/json", {"Content-Encoding": "gzip"}) == 200
    _wait_spans(receiver.store, 3)
    (span,) = receiver.store.trace(TRACE)
    assert (span.span_id, span.parent_id, span.kind, span.service, span.attributes) == \
        ("0000000000000001", CLIENT, "server", "js", {"http.route": "/p"})
    assert span.end_ns - span.start_ns == 5000
    assert len(receiver.store.trace("1" * 32)) == 2


def test_hostile_payloads_are_counted_not_fatal(receiver: OtlpReceiver) -> None:
    url = receiver.http_endpoint + "/v1/traces"
    assert _post(url, b"\xff\x00garbage", "application/x-protobuf") == 400
    assert _post(url, b"{not json", "application/json") == 400
    assert _post(url, b"[1, 2]", "application/json") == 400
    assert _post(url, b"{}", "text/plain") == 400
    # a gzip bomb: 50 MB of zeros in ~50 kB, over the 1 MB limit once expanded
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert _post(url, bomb, "application/x-protobuf", {"Content-Encoding": "gzip"}) == 400
    assert _post(url, b"x" * 1_100_000, "application/x-protobuf") == 413
    bad_id = _otlp_json(TRACE)
    bad_id["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "abcd"  # 2 bytes
    assert _post(url, json.dumps(bad_id).encode(), "application/json") == 200
    counts = receiver.store.counts()
    assert counts["malformed_payloads"] == 6
    assert (counts["unusable_spans"], counts["spans"]) == (1, 0)
    # the receiver still works afterwards
    assert _post(url, json.dumps(_otlp_json(TRACE)).encode(), "application/json") == 200
    assert receiver.store.counts()["spans"] == 1


def test_flood_is_capped_and_counted() -> None:
    r = OtlpReceiver(store=SpanStore(max_spans=10)).start()
    try:
        url = r.http_endpoint + "/v1/traces"
        for i in range(3):
            assert _post(url, json.dumps(_otlp_json(f"{i + 1:032x}", 5)).encode(),
                         "application/json") == 200
        assert (r.store.spans, r.store.dropped) == (10, 5)
    finally:
        r.stop()


def _held_port_with_free_neighbour(offset: int) -> tuple[socket.socket, int]:
    """A listening socket on port P whose neighbour P - offset is free (so the receiver's
    other port does not fail first)."""
    for _ in range(100):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port - offset))
            except OSError:
                held.close()
                continue
        held.listen()
        return held, port
    raise AssertionError("no port with a free neighbour")


def test_port_in_use_is_a_clear_error() -> None:
    held, port = _held_port_with_free_neighbour(1)   # HTTP (PORT+1) is the busy one
    with held, pytest.raises(ReceiverError, match=f"OTLP/HTTP .* 127.0.0.1:{port} "):
        OtlpReceiver(port=port - 1).start()
    held, port = _held_port_with_free_neighbour(-1)  # gRPC (PORT) is the busy one
    with held, pytest.raises(ReceiverError, match=f"OTLP/gRPC .* 127.0.0.1:{port} "):
        OtlpReceiver(port=port).start()


@pytest.mark.parametrize("text", ["4317", "host:", ":4317", "h:0", "h:65535", "h:x"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="--traces-listen must be HOST:PORT"):
        parse_listen(text)
    assert parse_listen("127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert parse_listen("[::1]:4317") == ("::1", 4317)


def _span(sid: str, parent: str, name: str, a: int, b: int, kind: str = "internal",
          **attrs: str) -> Span:
    return Span(TRACE, sid, parent, name, kind, a, b, dict(attrs), "svc")


def test_exclusive_time_nesting_concurrency_and_clipping() -> None:
    smap = load_span_map()
    server = _span("s" * 16, CLIENT, "POST /x", 0, 100_000, "server")
    spans = [
        server,
        # predict 10..60 µs containing a redis call 20..30: fetch 10, infer 40
        _span("p" * 16, server.span_id, "predict", 10_000, 60_000),
        _span("r" * 16, "p" * 16, "GET", 20_000, 30_000, "client", **{"db.system": "redis"}),
        # two concurrent cache reads 60..80 and 70..90 under an unmapped wrapper: union 30
        _span("w" * 16, server.span_id, "gather", 60_000, 95_000),
        _span("a" * 16, "w" * 16, "HGET", 60_000, 80_000, "client", **{"db.system": "redis"}),
        _span("b" * 16, "w" * 16, "HGET", 70_000, 90_000, "client", **{"db.system": "redis"}),
        # a span that outlives the server span is clipped: encode 95..100 (not ..120)
        _span("e" * 16, server.span_id, "encode json", 95_000, 120_000),
    ]
    assert stage_times_ns(server, spans, smap) == {"infer": 40_000, "fetch": 40_000,
                                                   "serialize": 5_000}


def test_join_counts_requests_that_cannot_join() -> None:
    smap, counts = load_span_map(), JoinCounts()
    rec = RequestRecord(TRACE, CLIENT, "n", 0.0, 50, True)
    assert join_request(rec, [], smap, counts) is None
    other = [_span("s" * 16, "f" * 16, "POST /x", 0, 10_000, "server")]  # not our child
    assert join_request(rec, other, smap, counts) is None
    mine = [_span("s" * 16, CLIENT, "POST /x", 0, 100_000, "server")]
    joined = join_request(rec, mine, smap, counts)  # client 50 µs < server 100 µs
    assert joined is not None and (joined.residual_us, joined.negative_residual) == (0, True)
    assert counts.to_dict() == {"requests": 3, "joined": 1, "without_trace": 1,
                                "without_server_span": 1, "negative_residuals": 1,
                                "requests_with_stage": {}}


def test_span_map_file_validation(tmp_path) -> None:
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"rules": [
        {"stage": "fetch", "attributes": {"peer.service": "feature-*"}},
        {"stage": None, "name": "* http send"}, {"stage": "infer", "kind": "internal"}]}))
    smap = load_span_map(good)
    assert smap.stage_of(_span("1" * 16, "", "x", 0, 1, "client",
                               **{"peer.service": "feature-store"})) == "fetch"
    assert smap.stage_of(_span("1" * 16, "", "POST /p http send", 0, 1)) is None
    assert smap.stage_of(_span("1" * 16, "", "y", 0, 1)) == "infer"
    for doc, message in [
        ({"rules": [{"stage": "fetch"}]}, "rules/0"),
        ({"rules": [{"stage": "bad stage!", "name": "x"}]}, "rules/0/stage"),
        ({"rules": [{"stage": "f", "kind": "server-ish"}]}, "rules/0/kind"),
        ({"rules": [{"stage": "f", "name_regex": "("}]}, "rules/0/name_regex"),
        ({"rulez": []}, "(top level)"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=f"span map {bad}: {message}".replace("(", r"\(")
                           .replace(")", r"\)")):
            load_span_map(bad)


def test_request_record_round_trip_and_errors() -> None:
    d = {"trace_id": TRACE, "span_id": CLIENT, "name": "n", "t": 1.5, "us": 10, "ok": True,
         "tags": {"input_class": "ood"}, "st": {"app": 1.0}}
    rec = RequestRecord.from_dict(d)
    assert rec.tags == (("input_class", "ood"),) and rec.server_timing == (("app", 1.0),)
    for bad in ({**d, "trace_id": "xyz"}, {**d, "us": "many"}, {k: v for k, v in d.items()
                                                                 if k != "t"}):
        with pytest.raises(ValueError, match="request record is malformed"):
            RequestRecord.from_dict(bad)
