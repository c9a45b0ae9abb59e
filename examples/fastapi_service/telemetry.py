"""OpenTelemetry tracing, off unless ``FASTSVC_OTEL=1``.

Two steps, because uvicorn's workers are separate processes and an exporter's background
thread does not survive a fork:
1. ``instrument(app)``, at import: FastAPIInstrumentor wraps the app (it must, before the
   app builds its middleware stack) and RedisInstrumentor patches the redis clients. Both
   take their tracer from the global provider lazily, so nothing is exported yet.
2. ``start()``, in each worker's lifespan startup: the TracerProvider, the exporter and the
   BatchSpanProcessor (its thread) for that process; ``stop()`` flushes them at shutdown.

Standard variables choose the exporter (this module reads only the first two; the
exporters read the rest themselves):
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default), ``console`` (JSON spans on stdout) or ``none``;
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf``
  (the spec's default) or ``grpc``;
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_SERVICE_NAME``
  (default here ``fastsvc``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_SCHEDULE_DELAY``, ...
Incoming W3C ``traceparent`` headers are honoured (the default propagator), so the server
span joins the caller's trace.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf", "grpc")


class TelemetryConfigError(ValueError):
    """An OTEL_* variable this service cannot honour."""


def instrument(app: FastAPI) -> None:
    # Scrapes and liveness probes would otherwise be most of the spans.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/healthz")
    RedisInstrumentor().instrument()


def _exporter() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind not in EXPORTERS:
        raise TelemetryConfigError(
            f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)} (got {kind!r})")
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol not in PROTOCOLS:
        raise TelemetryConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of "
                                   f"{', '.join(PROTOCOLS)} (got {protocol!r})")
    # Imported on demand: the gRPC exporter pulls in grpcio (~40 ms, threads).
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def start() -> TracerProvider:
    """The tracer provider of this worker process, exporting through a batch processor."""
    # The pid tells which worker a span came from (and joins spans to a profile of it).
    attributes: dict[str, str | int] = {PROCESS_PID: os.getpid()}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = "fastsvc"
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter = _exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def stop(provider: TracerProvider) -> None:
    """Export what is still queued; a collector that is down costs at most its timeout."""
    provider.shutdown()
