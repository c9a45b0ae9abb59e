"""Optional OpenTelemetry tracing: one span per prediction request, one child per stage.

Off by default (no OpenTelemetry import, one ``None`` check per request). ``REFSVC_TRACING``:

- ``off`` (default): nothing;
- ``on``: spans go to the global tracer provider, configured by whoever runs the service
  (``opentelemetry-instrument``, or an SDK set up before ``create_app``);
- ``console``: the service sets up the SDK itself with a ``SimpleSpanProcessor`` printing
  spans as JSON to stderr (gunicorn's log). Simple, not batched: a batch processor's thread
  does not survive gunicorn's fork of the preloaded app.
- ``otlp``: the service exports OTLP itself, configured by the standard variables
  (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``grpc`` or
  ``http/protobuf``, ``OTEL_BSP_SCHEDULE_DELAY``...), with a ``BatchSpanProcessor`` built in
  each worker on its first request (after the fork) and flushed when the worker exits
  (``shutdown()``, from gunicorn's ``worker_exit``). ``harness run --serve reference
  --traces`` sets these.

The ``app`` span is a SERVER span that continues the request's W3C ``traceparent`` when it
has one, so a client (the harness's load driver) can join the trace to its request.

Span names are the Server-Timing names: a parent ``app`` span (the whole handler) with
children ``fetch``, ``infer`` and ``serialize``, built after the fact from the same
``perf_counter_ns`` marks the Server-Timing header uses, so both tell the same durations.
Attributes: ``refsvc.model``, ``refsvc.version``, ``refsvc.instances``, ``refsvc.faults``.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["MODES", "setup", "setup_from_env", "enabled", "record_request"]

MODES = ("off", "on", "console", "otlp")
_tracer: Any = None
_mode = "off"
_otlp_pid: int | None = None
_provider: Any = None


def setup(mode: str) -> None:
    """Switch tracing to ``mode`` (one of MODES); ValueError names a bad mode."""
    global _tracer, _mode
    if mode not in MODES:
        raise ValueError(f"REFSVC_TRACING must be one of {MODES} (got {mode!r})")
    _mode = mode
    if mode == "off":
        _tracer = None
        return
    if mode == "otlp":
        _tracer = None  # built per worker process on first use: see _otlp_tracer()
        return
    from opentelemetry import trace

    if mode == "console":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        _tracer = provider.get_tracer("reference_service")
        return
    _tracer = trace.get_tracer("reference_service")


def setup_from_env() -> None:
    setup(os.environ.get("REFSVC_TRACING", "off").strip().lower() or "off")


def enabled() -> bool:
    return _tracer is not None or _mode == "otlp"


def _otlp_tracer() -> Any:
    """The OTLP tracer of this process, built on first use after gunicorn's fork (a batch
    processor's export thread started in the master would not exist in the workers)."""
    global _otlp_pid, _provider, _tracer
    if _otlp_pid != os.getpid():
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or \
            os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore
                OTLPSpanExporter,
            )
        _provider = TracerProvider(resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "reference_service"}))
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _tracer = _provider.get_tracer("reference_service")
        _otlp_pid = os.getpid()
    return _tracer


def shutdown() -> None:
    """Flush and stop this process's OTLP exporter (a worker about to exit)."""
    global _otlp_pid
    if _provider is not None and _otlp_pid == os.getpid():
        _provider.shutdown()
        _otlp_pid = None


def record_request(model: str, version: str, instances: int, marks_ns: tuple[int, ...],
                   faults: list[str] | None = None, traceparent: str | None = None) -> None:
    """Emit the spans of one request from its ``perf_counter_ns`` marks (t0..t4):
    app = t0..t4, fetch = t1..t2, infer = t2..t3, serialize = t3..t4."""
    tracer = _otlp_tracer() if _mode == "otlp" else _tracer
    if tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    t0, t1, t2, t3, t4 = marks_ns
    to_epoch = time.time_ns() - time.perf_counter_ns()
    attrs = {"refsvc.model": model, "refsvc.version": version, "refsvc.instances": instances,
             "refsvc.faults": list(faults or [])}
    incoming = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) \
        if traceparent else None
    parent = tracer.start_span("app", context=incoming, kind=SpanKind.SERVER,
                               start_time=t0 + to_epoch, attributes=attrs)
    ctx = trace.set_span_in_context(parent)
    for name, start, end in (("fetch", t1, t2), ("infer", t2, t3), ("serialize", t3, t4)):
        child = tracer.start_span(name, context=ctx, start_time=start + to_epoch,
                                  attributes={"refsvc.model": model})
        child.end(end_time=end + to_epoch)
    parent.end(end_time=t4 + to_epoch)
