"""W3C trace context on every request, and the record that joins a request to its trace.

With ``--traces`` every request of Locust's two HTTP clients (HttpSession, FastHttpSession)
carries ``traceparent: 00-<trace id>-<span id>-<flags>``, whatever the locustfile does: the
session's ``request`` is wrapped once per process (harness/load/hooks.py), which calls
:meth:`TraceContext.inject` before the request and the request hook calls :meth:`take` when
Locust reports it, in the same greenlet. A fraction ``sample`` of the requests is marked
sampled (flags 01); the rest carry flags 00, so a service with a parent-based sampler (the
OpenTelemetry default) does not record them, and no record is kept of them here.

A sampled request's record (trace id, client span id, name, when it was sent, its client
latency as sent, success, tags, the Server-Timing it got) is appended to
``traces/requests-<pid>.jsonl`` in the run directory at each interval: the traces collector
joins it to the service's spans after the load (harness/run/collectors/traces/).

A locustfile that sets its own ``traceparent`` keeps it, and that request is not recorded.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import gevent

__all__ = ["TRACE_ATTR", "TraceContext"]

TRACE_ATTR = "harness_trace"  # (trace id, span id) of the request in flight, on its greenlet
_MAX_BUFFER = 100_000  # records kept between flushes; beyond it they are counted as dropped


class TraceContext:
    """Makes the trace context of each request and buffers the records of sampled ones."""

    def __init__(self, out_dir: Path | None, sample: float = 1.0, seed: int | None = None
                 ) -> None:
        if not (isinstance(sample, (int, float)) and 0.0 < sample <= 1.0):
            raise ValueError(f"trace sample must be a fraction in (0, 1] (got {sample!r})")
        self.sample = float(sample)
        self.path = out_dir / "traces" / f"requests-{os.getpid()}.jsonl" if out_dir else None
        self._rng = random.Random(seed)
        self._ids = random.SystemRandom()  # ids must not repeat across processes and runs
        self._buffer: list[str] = []
        self.injected = 0
        self.sampled = 0
        self.recorded = 0
        self.dropped = 0
        self.own_context = 0  # the locustfile set its own traceparent
        self.write_errors: list[str] = []

    def inject(self, kwargs: dict[str, Any]) -> None:
        """Add ``traceparent`` to a request's keyword arguments (both clients take
        ``headers=``) and remember the context on the current greenlet."""
        headers = kwargs.get("headers")
        if headers is not None and any(str(k).lower() == "traceparent" for k in headers):
            self.own_context += 1
            setattr(gevent.getcurrent(), TRACE_ATTR, None)
            return
        trace_id = f"{self._ids.getrandbits(128):032x}"
        span_id = f"{self._ids.getrandbits(64) or 1:016x}"
        sampled = self.sample >= 1.0 or self._rng.random() < self.sample
        value = f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"
        kwargs["headers"] = {**(headers or {}), "traceparent": value}
        self.injected += 1
        setattr(gevent.getcurrent(), TRACE_ATTR, (trace_id, span_id) if sampled else None)

    @staticmethod
    def take() -> tuple[str, str] | None:
        """The sampled context of the request just reported on this greenlet, once."""
        current = gevent.getcurrent()
        found = getattr(current, TRACE_ATTR, None)
        if found is not None:
            setattr(current, TRACE_ATTR, None)
        return found

    def record(self, ids: tuple[str, str], name: str, sent: float, latency_us: int, ok: bool,
               tags: dict[str, str], server_timing: dict[str, float] | None) -> None:
        if len(self._buffer) >= _MAX_BUFFER:
            self.dropped += 1
            return
        doc: dict[str, Any] = {"trace_id": ids[0], "span_id": ids[1], "name": name,
                               "t": round(sent, 6), "us": latency_us, "ok": ok}
        if tags:
            doc["tags"] = tags
        if server_timing:
            doc["st"] = server_timing
        self._buffer.append(json.dumps(doc, separators=(",", ":")))
        self.sampled += 1

    def flush(self) -> None:
        """Append the buffered records to this process's file (once per interval)."""
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        if self.path is None:
            self.dropped += len(lines)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
            self.recorded += len(lines)
        except OSError as exc:
            self.dropped += len(lines)
            if len(self.write_errors) < 5:
                self.write_errors.append(f"{self.path}: {exc.strerror or exc}")

    def report(self) -> dict[str, Any]:
        """What load.json says of the trace context (``traces`` key)."""
        return {"sample": self.sample, "injected": self.injected, "sampled": self.sampled,
                "recorded": self.recorded, "dropped": self.dropped,
                "own_context": self.own_context, "write_errors": list(self.write_errors)}
