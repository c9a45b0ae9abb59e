"""Spans as the harness keeps them: decoded from OTLP once, bounded, indexed by trace id.

An OTLP export carries resource spans > scope spans > spans with every attribute the
service set. The join needs little of that: ids, parent, name, kind, the two timestamps
and a handful of attributes the span map matches on. :func:`decode_request` turns an
``ExportTraceServiceRequest`` into :class:`Span` tuples keeping only those, and
:class:`SpanStore` holds them under a hard cap (the target is not trusted: a service that
floods spans costs the harness a bounded amount of memory, and the excess is counted).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["KEPT_ATTRIBUTES", "KINDS", "Span", "SpanStore", "decode_request"]

#: attributes the span map may match on (OTel semantic conventions, old and new names)
KEPT_ATTRIBUTES = frozenset({
    "db.system", "db.system.name", "db.operation", "db.operation.name", "rpc.system",
    "rpc.service", "rpc.method", "http.route", "http.method", "http.request.method",
    "messaging.system", "peer.service", "server.address", "net.peer.name", "url.full",
    "http.url", "code.function", "code.namespace", "asgi.event.type",
})
#: OTLP's SpanKind enum, by value
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
MAX_NAME = 200
MAX_ATTR_VALUE = 200


class Span(NamedTuple):
    """One span, as the join needs it. Ids are lowercase hex; times epoch nanoseconds."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, str]
    service: str


def _value(v: Any) -> str:
    """An OTLP AnyValue as a short string (only scalars are kept)."""
    which = v.WhichOneof("value")
    if which in ("string_value", "bool_value", "int_value", "double_value"):
        return str(getattr(v, which))[:MAX_ATTR_VALUE]
    return ""


def decode_request(request: Any) -> tuple[list[Span], int]:
    """Spans of an ``ExportTraceServiceRequest``, and how many were unusable (ids of the
    wrong length, end before start): counted, not raised, so one bad span does not cost
    the others."""
    out: list[Span] = []
    bad = 0
    for rs in request.resource_spans:
        service = ""
        for kv in rs.resource.attributes:
            if kv.key == "service.name":
                service = _value(kv.value)
        for ss in rs.scope_spans:
            for s in ss.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8 \
                        or s.end_time_unix_nano < s.start_time_unix_nano:
                    bad += 1
                    continue
                attrs = {kv.key: _value(kv.value) for kv in s.attributes
                         if kv.key in KEPT_ATTRIBUTES}
                kind = KINDS[s.kind] if 0 <= s.kind < len(KINDS) else "unspecified"
                out.append(Span(s.trace_id.hex(), s.span_id.hex(),
                                s.parent_span_id.hex() if len(s.parent_span_id) == 8 else "",
                                s.name[:MAX_NAME], kind, int(s.start_time_unix_nano),
                                int(s.end_time_unix_nano), attrs, service))
    return out, bad


class SpanStore:
    """Spans by trace id, thread-safe, at most ``max_spans`` of them (about 300 bytes
    each: the default cap of 2,000,000 bounds the store near 600 MB; a run that needs more
    should sample, ``--traces-sample``). Spans over the cap are counted, not kept."""

    def __init__(self, max_spans: int = 2_000_000) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be >= 1 (got {max_spans})")
        self.max_spans = max_spans
        self._by_trace: dict[str, list[Span]] = {}
        self._parents: set[str] = set()  # parent ids of the kept spans
        self._lock = threading.Lock()
        self.spans = 0
        self.dropped = 0      # over the cap
        self.unusable = 0     # bad ids or times
        self.payloads = 0
        self.malformed_payloads = 0
        self.bytes = 0
        self.last_arrival: float | None = None

    def add(self, spans: Iterable[Span], unusable: int = 0, size: int = 0,
            arrival: float | None = None) -> None:
        with self._lock:
            self.payloads += 1
            self.unusable += unusable
            self.bytes += size
            if arrival is not None:
                self.last_arrival = arrival
            for span in spans:
                if self.spans >= self.max_spans:
                    self.dropped += 1
                    continue
                self._by_trace.setdefault(span.trace_id, []).append(span)
                self._parents.add(span.parent_id)
                self.spans += 1

    def malformed(self, size: int = 0) -> None:
        with self._lock:
            self.malformed_payloads += 1
            self.bytes += size

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return list(self._by_trace.get(trace_id, ()))

    def trace_ids(self) -> set[str]:
        with self._lock:
            return set(self._by_trace)

    def without_child(self, span_ids: Iterable[str]) -> set[str]:
        """Those of ``span_ids`` that no kept span names as its parent: the client spans
        whose server span has not arrived (span ids are 64 random bits: a span of another
        trace naming the same parent is not a concern)."""
        with self._lock:
            return {s for s in span_ids if s not in self._parents}

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {"spans": self.spans, "traces": len(self._by_trace),
                    "dropped_over_limit": self.dropped, "unusable_spans": self.unusable,
                    "payloads": self.payloads, "malformed_payloads": self.malformed_payloads,
                    "bytes": self.bytes, "max_spans": self.max_spans}
