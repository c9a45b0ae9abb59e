"""A test server that reports its stages only as OpenTelemetry spans, with known durations.

No Server-Timing. Every ``POST`` continues the request's ``traceparent`` with a SERVER span
and two children: ``fetch`` (a CLIENT span with ``db.system=redis``, sleeping a delay drawn
from a seeded log-normal) and ``predict`` (an INTERNAL span, a seeded delay too), then
answers. The spans are built from the same ``time.time_ns()`` marks that go into the truth
log (``--log``: one JSON line per request: trace id and the server/fetch/infer µs exactly as
the join computes them), and the server span ends before the response is written, so the
client always sees a latency >= the server span. Spans go out through the SDK's OTLP/HTTP
exporter to ``--endpoint`` (batched every 100 ms).

    python tests/otel_span_server.py --port 0 --endpoint http://127.0.0.1:4318 --log t.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL")
    p.add_argument("--log", required=True)
    p.add_argument("--fetch-ms", type=float, default=2.0)
    p.add_argument("--infer-ms", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    provider = TracerProvider(resource=Resource.create({"service.name": "span-server"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=args.endpoint.rstrip("/") + "/v1/traces"),
        schedule_delay_millis=100))
    tracer = provider.get_tracer("span-server")
    rng, lock = random.Random(args.seed), threading.Lock()
    log = open(args.log, "a", encoding="utf-8")  # noqa: SIM115 - the server's lifetime

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._reply(b'{"ok": true}')

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                fetch_s = rng.lognormvariate(0, 0.5) * args.fetch_ms / 1000
                infer_s = rng.lognormvariate(0, 0.3) * args.infer_ms / 1000
            ctx = TraceContextTextMapPropagator().extract(
                {"traceparent": self.headers.get("traceparent", "")})
            t0 = time.time_ns()
            time.sleep(fetch_s)
            t1 = time.time_ns()
            time.sleep(infer_s)
            t2 = time.time_ns()
            server = tracer.start_span("POST /predict", context=ctx, kind=SpanKind.SERVER,
                                       start_time=t0)
            inner = trace.set_span_in_context(server)
            tracer.start_span("HMGET", context=inner, kind=SpanKind.CLIENT, start_time=t0,
                              attributes={"db.system": "redis"}).end(end_time=t1)
            tracer.start_span("predict", context=inner, start_time=t1).end(end_time=t2)
            t3 = time.time_ns()
            server.end(end_time=t3)
            trace_id = f"{server.get_span_context().trace_id:032x}"
            with lock:
                log.write(json.dumps({"trace_id": trace_id, "server_us": round((t3 - t0) / 1000),
                                      "fetch_us": round((t1 - t0) / 1000),
                                      "infer_us": round((t2 - t1) / 1000)}) + "\n")
                log.flush()
            self._reply(b'{"eta": 12.5}')

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
