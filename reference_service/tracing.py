"""Optional OpenTelemetry tracing: one span per prediction request, one child per stage.

Off by default (no OpenTelemetry import, one ``None`` check per request). ``REFSVC_TRACING``:

- ``off`` (default): nothing;
- ``on``: spans go to the global tracer provider, configured by whoever runs the service
  (``opentelemetry-instrument``, or an SDK set up before ``create_app``);
- ``console``: the service sets up the SDK itself with a ``SimpleSpanProcessor`` printing
  spans as JSON to stderr (gunicorn's log). Simple, not batched: a batch processor's thread
  does not survive gunicorn's fork of the preloaded app.

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

MODES = ("off", "on", "console")
_tracer: Any = None


def setup(mode: str) -> None:
    """Switch tracing to ``mode`` (one of MODES); ValueError names a bad mode."""
    global _tracer
    if mode not in MODES:
        raise ValueError(f"REFSVC_TRACING must be one of {MODES} (got {mode!r})")
    if mode == "off":
        _tracer = None
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
    return _tracer is not None


def record_request(model: str, version: str, instances: int, marks_ns: tuple[int, ...],
                   faults: list[str] | None = None) -> None:
    """Emit the spans of one request from its ``perf_counter_ns`` marks (t0..t4):
    app = t0..t4, fetch = t1..t2, infer = t2..t3, serialize = t3..t4."""
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry import trace

    t0, t1, t2, t3, t4 = marks_ns
    to_epoch = time.time_ns() - time.perf_counter_ns()
    attrs = {"refsvc.model": model, "refsvc.version": version, "refsvc.instances": instances,
             "refsvc.faults": list(faults or [])}
    parent = tracer.start_span("app", start_time=t0 + to_epoch, attributes=attrs)
    ctx = trace.set_span_in_context(parent)
    for name, start, end in (("fetch", t1, t2), ("infer", t2, t3), ("serialize", t3, t4)):
        child = tracer.start_span(name, context=ctx, start_time=start + to_epoch,
                                  attributes={"refsvc.model": model})
        child.end(end_time=end + to_epoch)
    parent.end(end_time=t4 + to_epoch)
