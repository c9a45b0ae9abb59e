"""Joining the service's spans to the load driver's requests: one trace per request.

The load driver sends every request with a W3C ``traceparent`` naming a trace id and a
client span id of its own (``harness.load.tracecontext``). The service's **server span**
is the span whose parent is that client span (a service that ignores the incoming context
starts a trace of its own, which cannot be joined and is counted as such). Below it:

- a span's **stage** comes from the span map; a span without one is transparent (its
  time belongs to the nearest ancestor with a stage, or to the server span itself);
- each instant of the server span belongs to the *deepest* span with a stage covering it
  (exclusive time, as a profiler counts it), so a Redis call inside a ``predict`` span is
  ``fetch``, not ``infer``, and nothing is counted twice;
- concurrent spans of one stage (two cache reads awaited together) count as the union of
  their intervals: a stage's time is wall time, as Server-Timing reports it;
- everything is clipped to the server span.

The service time is the server span's duration; residual = client latency (as sent,
uncorrected) minus it, as with Server-Timing. A residual below zero (clock skew between
hosts, a server span that outlived its response) is recorded as 0 and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.run.collectors.traces.spanmap import SpanMap
from harness.run.collectors.traces.spans import Span

__all__ = ["JoinCounts", "Joined", "RequestRecord", "join_request", "stage_times_ns"]

Interval = tuple[int, int]


@dataclass(frozen=True)
class RequestRecord:
    """What the load driver recorded of one traced request (``traces/requests*.jsonl``)."""

    trace_id: str
    span_id: str
    name: str
    t: float            # when it was sent, epoch s
    latency_us: int     # client latency as sent (uncorrected), µs
    ok: bool
    tags: tuple[tuple[str, str], ...] = ()
    server_timing: tuple[tuple[str, float], ...] = ()  # ms, as the service sent them

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestRecord:
        """From one JSON line; ValueError naming the field when it is not one."""
        try:
            trace_id, span_id = str(d["trace_id"]), str(d["span_id"])
            if len(trace_id) != 32 or len(span_id) != 16:
                raise ValueError("trace_id must be 32 and span_id 16 hex digits")
            int(trace_id, 16), int(span_id, 16)
            tags = tuple(sorted((str(k), str(v)) for k, v in (d.get("tags") or {}).items()))
            st = tuple(sorted((str(k), float(v)) for k, v in (d.get("st") or {}).items()))
            return cls(trace_id, span_id, str(d["name"]), float(d["t"]), int(d["us"]),
                       bool(d["ok"]), tags, st)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"request record is malformed ({exc!s:.120}; got "
                             f"{str(dict(d))[:120]})") from None


@dataclass(frozen=True)
class Joined:
    """One request with its trace: service time, stage times and residual, µs."""

    request: RequestRecord
    server_us: int
    stages_us: dict[str, int]
    residual_us: int
    negative_residual: bool


@dataclass
class JoinCounts:
    requests: int = 0
    joined: int = 0
    without_trace: int = 0          # no span of the trace arrived
    without_server_span: int = 0    # spans arrived, none a child of the client span
    negative_residuals: int = 0
    by_stage: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "joined": self.joined,
                "without_trace": self.without_trace,
                "without_server_span": self.without_server_span,
                "negative_residuals": self.negative_residuals,
                "requests_with_stage": dict(sorted(self.by_stage.items()))}


def _union_length(intervals: Iterable[Interval]) -> int:
    total, end = 0, None
    start = 0
    for a, b in sorted(intervals):
        if end is None or a > end:
            if end is not None:
                total += end - start
            start, end = a, b
        else:
            end = max(end, b)
    return total + (end - start if end is not None else 0)


def _subtract(piece: Interval, holes: list[Interval]) -> list[Interval]:
    """``piece`` minus the union of ``holes`` (sorted by start)."""
    out, (a, b) = [], piece
    for h0, h1 in holes:
        if h1 <= a or h0 >= b:
            continue
        if h0 > a:
            out.append((a, h0))
        a = max(a, h1)
        if a >= b:
            return out
    if a < b:
        out.append((a, b))
    return out


def stage_times_ns(server: Span, spans: Iterable[Span], span_map: SpanMap) -> dict[str, int]:
    """Exclusive wall time per stage below ``server`` (see the module docstring), ns."""
    children: dict[str, list[Span]] = {}
    for s in spans:
        if s.span_id != server.span_id:
            children.setdefault(s.parent_id, []).append(s)
    lo, hi = server.start_ns, server.end_ns
    pieces: dict[str, list[Interval]] = {}

    def visit(span_id: str, depth: int) -> list[Interval]:
        """Walk below ``span_id``; return the (clipped) intervals of the nearest staged
        descendants, after adding each staged span's exclusive pieces to its stage."""
        covered: list[Interval] = []
        if depth > 64:  # a cycle of parent ids or an absurd depth: stop, don't recurse on
            return covered
        for child in children.get(span_id, ()):
            iv = (max(lo, child.start_ns), min(hi, child.end_ns))
            below = visit(child.span_id, depth + 1)
            stage = span_map.stage_of(child)
            if stage is None:
                covered += below
                continue
            if iv[0] < iv[1]:
                pieces.setdefault(stage, []).extend(_subtract(iv, sorted(below)))
                covered.append(iv)
        return covered

    visit(server.span_id, 0)
    return {stage: _union_length(ivs) for stage, ivs in pieces.items() if ivs}


def _server_span(rec: RequestRecord, spans: list[Span]) -> Span | None:
    candidates = [s for s in spans if s.parent_id == rec.span_id]
    if not candidates:
        return None
    # A proxy in front of the service would add a level; the first span under the
    # client's is the one that answered it.
    return min(candidates, key=lambda s: s.start_ns)


def join_request(rec: RequestRecord, spans: list[Span], span_map: SpanMap,
                 counts: JoinCounts) -> Joined | None:
    """Join one request to its trace's spans; None (counted) when it cannot be."""
    counts.requests += 1
    if not spans:
        counts.without_trace += 1
        return None
    server = _server_span(rec, spans)
    if server is None:
        counts.without_server_span += 1
        return None
    server_us = max(1, round((server.end_ns - server.start_ns) / 1000))
    stages = {k: max(1, round(v / 1000))
              for k, v in stage_times_ns(server, spans, span_map).items() if v > 0}
    residual = rec.latency_us - server_us
    counts.joined += 1
    for k in stages:
        counts.by_stage[k] = counts.by_stage.get(k, 0) + 1
    if residual < 0:
        counts.negative_residuals += 1
    return Joined(rec, server_us, stages, max(0, residual), residual < 0)
