"""Locust's ``events.request`` -> the harness's HDR histograms and counters.

Per request: client latency (ms float -> integer µs), coordinated-omission corrected
latency in the open model (response time + the task's lateness), success or failure
with its error type (``HTTP 503``, or the root exception class such as
``ConnectionRefusedError``), the ``Server-Timing`` stages, the residual (client
latency minus the service's total: ``app`` when sent, else the sum of the stages),
and the same again for every tag found in the request's ``context``.

This runs once per request inside the load generator, so its cost is the harness's
overhead on the load: series are looked up once per (method, name, tag) and cached,
no percentile is ever computed here, and counters are plain attributes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import GreenletExit

from harness.load.pacing import LATENESS_ATTR
from harness.load.recorder import LatencyRecorder, RefusedSeries, Series
from harness.load.servertiming import ServerTimingError, parse_server_timing
from harness.load.servicetotal import ServiceTotal
from harness.load.tracecontext import TraceContext
from harness.rundir import clock

__all__ = ["RequestHook", "count_unanswered", "error_type"]

_OS_MODULES = ("builtins", "socket", "ssl")
_REDIRECT_LOOP = "Redirection limit reached"  # geventhttpclient's RetriesExceeded text
_SLOT = {"client_uncorrected": "unc", "client_failed": "failed"}


def error_type(exception: BaseException, response: Any = None) -> str:
    """``HTTP <status>`` for an HTTP error, ``TooManyRedirects`` for a redirect loop, else
    the root cause's class name.

    requests wraps ``ConnectionRefusedError`` three levels deep (ConnectionError ->
    MaxRetryError -> NewConnectionError); geventhttpclient wraps a timeout of a retried
    (idempotent) request in ``RetriesExceeded(original=...)`` and names a redirect loop
    only in its text ("Redirection limit reached"). The root is what an operator needs to
    read: a hung target is a ``TimeoutError``, not ``RetriesExceeded``.
    """
    status = getattr(response, "status_code", 0) or 0
    if status >= 400:
        return f"HTTP {status}"
    seen: set[int] = set()
    exc: BaseException | None = exception
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and type(exc).__module__ in _OS_MODULES:
            return type(exc).__name__
        if _REDIRECT_LOOP in str(getattr(exc, "text", "")):
            return "TooManyRedirects"
        nxt = (exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
               or getattr(exc, "original", None))
        if nxt is None and exc.args and isinstance(exc.args[0], BaseException):
            nxt = exc.args[0]
        exc = nxt if isinstance(nxt, BaseException) else None
    return type(exception).__name__


_UNANSWERED: list[Callable[[float], None]] = []  # the active hook's counter (one per driver)
_TRACING: list[TraceContext] = []  # the active trace context (--traces), if any
#: an unanswered request that had waited this long was slow, not merely cut by the stop
UNANSWERED_LONG_S = 1.0


def _counting_request(request: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(request)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        for traces in _TRACING:
            traces.inject(kwargs)
        sent = time.monotonic()
        try:
            return request(self, *args, **kwargs)
        except GreenletExit:
            # The user was killed at the stop while this request waited for its answer:
            # Locust fires no request event for it, so without this it would vanish.
            for count in _UNANSWERED:
                count(time.monotonic() - sent)
            raise

    wrapper.__harness_counting__ = True  # type: ignore[attr-defined]
    return wrapper


def count_unanswered(count: Callable[[float], None]) -> None:
    """Count requests still in flight when the stop kills their user, through ``count``
    (called with the seconds the request had waited).

    Two kinds: requests still waiting after the stop grace (a slow or hung service: the
    percentiles leave out the slowest requests), and requests just sent when the stop came
    (Locust kills a user between tasks asynchronously: with no think time the kill lands
    in the next request, ms after it started, often before the service received it).

    Wraps ``request`` of Locust's two HTTP clients (FastHttpSession and HttpSession) once
    per process; a locustfile's own client (gRPC, websockets) is not seen.
    """
    from locust.clients import HttpSession
    from locust.contrib.fasthttp import FastHttpSession

    for cls in (FastHttpSession, HttpSession):
        if not getattr(cls.request, "__harness_counting__", False):
            cls.request = _counting_request(cls.request)  # type: ignore[method-assign]
    _UNANSWERED[:] = [count]


class _Bundle:
    """The series of one (request name, tag) pair."""

    __slots__ = ("rec", "name", "tag", "client", "unc", "failed", "residual", "stages")

    def __init__(self, rec: LatencyRecorder, name: str, tag: str | None) -> None:
        self.rec = rec
        self.name = name
        self.tag = tag
        # Series (and their files) appear on first use: a run without failures has no
        # empty client_failed log.
        self.client: Series | None = None
        self.unc: Series | None = None
        self.failed: Series | None = None
        self.residual: Series | None = None
        self.stages: dict[str, Series] = {}

    def make(self, metric: str) -> Series:
        s = self.rec.series(metric, self.name, tag=self.tag)
        setattr(self, _SLOT.get(metric, metric), s)
        return s

    def stage(self, stage: str) -> Series:
        s = self.stages.get(stage)
        if s is None:
            s = self.rec.series("stage", self.name, stage, self.tag)
            if not isinstance(s, RefusedSeries):  # past the run's cap: names are not kept
                self.stages[stage] = s
        return s


class RequestHook:
    """Listener for ``environment.events.request`` feeding a :class:`LatencyRecorder`."""

    def __init__(
        self,
        recorder: LatencyRecorder,
        *,
        tag_keys: list[str] | tuple[str, ...] = ("input_class",),
        open_model: bool = False,
        traces: TraceContext | None = None,
        service_total: ServiceTotal | None = None,
    ) -> None:
        self.rec = recorder
        self.tag_keys = tuple(tag_keys)
        self.open_model = open_model
        self.traces = traces
        self.total = service_total or ServiceTotal()
        self._bundles: dict[tuple[str, str, str | None], _Bundle] = {}

    def install(self, events: Any) -> None:
        events.request.add_listener(self.on_request)
        count_unanswered(self._unanswered)
        _TRACING[:] = [self.traces] if self.traces is not None else []

    def _unanswered(self, waited_s: float) -> None:
        counts = self.rec.counts
        counts.unanswered += 1
        if waited_s >= UNANSWERED_LONG_S:
            counts.unanswered_long += 1

    def _bundle(self, request_type: str, name: str, tag: str | None) -> _Bundle:
        key = (request_type, name, tag)
        b = self._bundles.get(key)
        if b is None:
            # Locust keys stats by (method, name); a name that already says its method
            # (name="GET /items") is not prefixed twice.
            series_name = (f"{request_type} {name}"
                           if request_type and not str(name).startswith(f"{request_type} ")
                           else str(name))
            b = self._bundles[key] = _Bundle(self.rec, series_name, tag)
        return b

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int = 0,
        response: Any = None,
        context: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **_kwargs: Any,
    ) -> None:
        now = clock.now()
        rec = self.rec
        if now >= rec.roll_at:
            rec.roll(now)
            if self.traces is not None:
                self.traces.flush()
        b = self._bundles.get((request_type, name, None)) or self._bundle(request_type, name, None)
        bundles = [b]
        if context and self.tag_keys:
            for key in self.tag_keys:
                value = context.get(key)
                if value is not None:
                    bundles.append(self._bundle(request_type, name, f"{key}={value}"))
        unc = int(response_time * 1000.0 + 0.5)
        counts = rec.counts
        counts.requests += 1
        row = counts.by_name.get(b.name)
        if row is None:
            row = counts.by_name[b.name] = [0, 0]
        row[0] += 1
        if exception is not None:
            counts.failures += 1
            row[1] += 1
            err = b.name + "|" + error_type(exception, response)
            counts.errors[err] = counts.errors.get(err, 0) + 1
            for bb in bundles:
                (bb.failed or bb.make("client_failed")).record(unc)
            self._trace_record(b.name, now, unc, False, context, None)
            return
        corrected = unc
        if self.open_model:
            corrected += getattr(gevent.getcurrent(), LATENESS_ATTR, 0)
        for bb in bundles:
            (bb.client or bb.make("client")).record(corrected)
            (bb.unc or bb.make("client_uncorrected")).record(unc)
        headers = getattr(response, "headers", None)
        if headers is not None:
            conns = rec.connections
            conns[0] += 1
            closing = headers.get("Connection")
            if closing is not None and closing.lower() == "close":
                conns[1] += 1
        stages = self._record_stages(bundles, headers, unc)
        self._trace_record(b.name, now, unc, True, context, stages)

    def _trace_record(self, name: str, now: float, unc: int, ok: bool,
                      context: dict[str, Any] | None, stages: dict[str, float] | None) -> None:
        """With --traces: what the traces collector needs to join this request to its trace."""
        if self.traces is None:
            return
        ids = self.traces.take()
        if ids is None:
            return
        tags = {k: str(context[k]) for k in self.tag_keys if context and context.get(k) is not None}
        self.traces.record(ids, name, now - unc / 1e6, unc, ok, tags, stages)

    def _record_stages(self, bundles: list[_Bundle], headers: Any, unc: int
                       ) -> dict[str, float] | None:
        """The Server-Timing stages of a successful request, and its residual: client
        latency (uncorrected) minus the service's total (the entry that covers the others,
        harness/load/servicetotal.py; else the stages' sum). Returns the stages (ms) as the
        service sent them, or None."""
        counts = self.rec.counts
        header = headers.get("Server-Timing") if headers is not None else None
        if not header:
            counts.server_timing_missing += 1
            return None
        try:
            stages = parse_server_timing(header)
        except ServerTimingError:
            counts.server_timing_malformed += 1
            return None
        if not stages:
            counts.server_timing_missing += 1
            return None
        stage_us = {stage: int(ms * 1000.0 + 0.5) for stage, ms in stages.items()}
        for bb in bundles:
            for stage, value in stage_us.items():
                bb.stage(stage).record(value)

        def residual(total: int) -> None:
            value = unc - total
            if value < 0:
                self.rec.counts.negative_residuals += 1
                value = 0
            for bb in bundles:
                (bb.residual or bb.make("residual")).record(value)

        self.total.residual(stage_us, unc, residual)
        return stages
