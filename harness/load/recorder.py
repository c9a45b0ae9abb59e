"""Per-interval HDR latency histograms of one load run, written as standard ``.hlog`` files.

:class:`LatencyRecorder` lives in the load driver process. Values are integer
microseconds; every series is an ``HdrHistogram(1, 3_600_000_000, 3)``, so a recorded
value is reported within 0.1 % (3 significant figures) between 1 µs and 1 h. A value
outside that range is not recorded but counted in the series' ``out_of_range``
(``record_value`` returns False instead of raising; we never drop it silently).

Intervals are aligned to ``load_start + k * interval_s``. At each boundary the recorder
writes one hlog line per series that has values, one line to ``intervals.jsonl`` and,
when a series appeared or an out-of-range count changed, rewrites ``series.json``
atomically. A request belongs to the interval in which it completed.

Three roles share the class (see docs/load-driver.md):

- local (``out_dir`` set): records and writes;
- worker (``out_dir=None``): records, and ``take_encoded()`` hands closed intervals over
  as compressed histograms for Locust's worker report;
- master (``out_dir`` set, records nothing itself): ``merge_encoded()`` adds worker
  intervals exactly (``decode_and_add``) and ``flush_merged()`` writes an interval once
  every worker has reported past it, or after ``grace_s``.

A run holds at most ``max_series`` series (:data:`MAX_SERIES`): stage names come from the
target, and a target that sends names never seen before (20 per request took a driver to
1.5 GB in 10 s) must not grow the driver without bound. A series the cap refuses records
nothing; its values are counted (``over_series_limit``, load.json ``bounds``).

Import-safe: no Locust, no gevent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.load.intervalcounts import IntervalCounts
from harness.rundir.hlog import (
    HIGHEST_US,
    LOWEST_US,
    SIGNIFICANT_FIGURES,
    HlogFiles,
    SeriesKey,
    new_histogram,
)

__all__ = [
    "HIGHEST_US", "LOWEST_US", "MAX_SERIES", "SIGNIFICANT_FIGURES", "METRICS",
    "IntervalCounts", "LatencyRecorder", "RefusedSeries", "Series", "SeriesKey",
    "new_histogram",
]

METRICS = ("client", "client_uncorrected", "client_failed", "stage", "residual", "lateness",
           "lateness_loop")
#: series per run. Each holds two histograms of ~185 KiB (this interval's and the run's
#: total): ~185 MiB at the cap. The runs on record have 17-44 series; an OOD scenario with
#: ten input classes and three models about 250.
MAX_SERIES = 500


def release(hists: Any) -> None:
    """Free histograms that are no longer used, now.

    An hdrh histogram and its encoder point at each other, so dropping the last reference
    frees nothing: the pair (with its 92 KiB counts array) waits for a full cyclic garbage
    collection, which a long run makes ever rarer. Interval histograms are made every second
    per series; left to the collector they grew the driver by ~1.3 MiB a minute (tracemalloc
    over a 200 s run: 166 such arrays, 15 MiB, alive but unreachable).
    """
    for h in hists:
        encoder = getattr(h, "encoder", None)
        if encoder is not None:
            encoder.histogram = None
        h.encoder = None


class Series:
    """One histogram series: the current interval's histogram plus running totals."""

    __slots__ = ("key", "file", "hist", "out_of_range", "count", "total")

    def __init__(self, key: SeriesKey, file: str) -> None:
        self.key = key
        self.file = file
        self.hist = new_histogram()
        self.out_of_range = 0
        self.count = 0  # values written, whole run
        self.total = new_histogram()  # measured (non-warm-up) intervals only

    def record(self, value_us: int) -> bool:
        """Record one value; False (and counted) when outside 1 µs .. 1 h."""
        if self.hist.record_value(value_us):
            return True
        self.out_of_range += 1
        return False


class RefusedSeries(Series):
    """Stands in for a series the run's cap refused: records nothing, counts each value in
    its recorder's ``over_series_limit`` (never kept by the recorder, so a name that comes
    once costs nothing after its request)."""

    __slots__ = ("owner",)

    def __init__(self, key: SeriesKey, owner: LatencyRecorder) -> None:  # noqa: D107
        self.key, self.file, self.owner = key, "", owner
        self.out_of_range = self.count = 0

    def record(self, value_us: int) -> bool:
        self.owner.counts.over_series_limit += 1
        return False


class LatencyRecorder:
    """Interval HDR histograms per series (metric, name, stage, tag); see module doc."""

    def __init__(
        self,
        load_start: float,
        interval_s: float = 1.0,
        *,
        measure_start: float | None = None,
        out_dir: Path | str | None = None,
        open_model: bool = False,
        grace_s: float = 10.0,
        on_interval: Callable[[dict[str, Any]], None] | None = None,
        interval_hook: Callable[[int, float], dict[str, int]] | None = None,
        users: Callable[[], int] | None = None,
        max_series: int = MAX_SERIES,
    ) -> None:
        if not (isinstance(load_start, (int, float)) and math.isfinite(load_start)):
            raise ValueError(f"load_start must be finite epoch seconds (got {load_start!r})")
        if not (isinstance(interval_s, (int, float)) and interval_s > 0):
            raise ValueError(f"interval_s must be > 0 (got {interval_s!r})")
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0 (got {grace_s!r})")
        self.load_start = float(load_start)
        self.interval_s = float(interval_s)
        self.measure_start = float(load_start if measure_start is None else measure_start)
        self.open_model = open_model
        self.grace_s = grace_s
        self.on_interval = on_interval
        self.interval_hook = interval_hook
        self.users = users
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ValueError(f"max_series must be an integer >= 1 (got {max_series!r})")
        self.max_series = max_series
        self.over_series_limit = 0  # values refused by the series cap, whole run
        #: the trace context of --traces (harness.load.tracecontext), set by the run loop
        self.traces: Any = None
        #: which Server-Timing entry is the service's total (harness.load.servicetotal)
        self.service_total: Any = None
        #: the client path's own time per request (harness.load.calibrate), or None
        self.client_overhead: dict[str, Any] | None = None
        #: [successful responses, of which Connection: close]: which of the calibration's
        #: two costs (kept-alive, new connection) the run's requests paid
        self.connections = [0, 0]
        self.files = HlogFiles(Path(out_dir), self.load_start, self.interval_s) if out_dir else None
        self._series: dict[SeriesKey, Series] = {}
        self.k = 0  # index of the current interval
        self.counts = IntervalCounts()
        self.roll_at = self.load_start + self.interval_s
        self._last_k: float = math.inf  # the interval holding load_end absorbs in-flight tails
        self.finished = False
        self.measured = IntervalCounts()
        self.measured_since: float | None = None  # start of the first measured interval
        self.last_end = self.load_start
        # worker role
        self._outbox: list[dict[str, Any]] = []
        # master role
        self._sources: dict[str, float] = {}  # source -> last closed interval it reported
        self.source_requests: dict[str, int] = {}  # source -> requests merged from it
        self.source_measured: dict[str, int] = {}  # of those, in the measured window
        self._pending: dict[int, dict[str, Any]] = {}
        self._next_flush = 0

    # -- series -------------------------------------------------------------------------
    def series(
        self, metric: str, name: str, stage: str | None = None, tag: str | None = None
    ) -> Series:
        """The series for this key, created (and its file started) on first use; past the
        run's cap a :class:`RefusedSeries` that counts what it is given."""
        key = SeriesKey(metric, name, stage, tag)
        s = self._series.get(key)
        if s is None:
            if metric not in METRICS:
                raise ValueError(f"metric must be one of {METRICS} (got {metric!r})")
            if (metric == "stage") != (stage is not None):
                raise ValueError(f"stage is required for metric 'stage' only (got {stage!r})")
            if len(self._series) >= self.max_series:
                return RefusedSeries(key, self)
            file = self.files.add(key) if self.files else ""
            s = self._series[key] = Series(key, file)
        return s

    def all_series(self) -> list[Series]:
        return list(self._series.values())

    def interval_start(self, k: int) -> float:
        return self.load_start + k * self.interval_s

    # -- local / worker: closing intervals ----------------------------------------------
    def set_load_end(self, load_end: float) -> None:
        """The interval containing ``load_end`` becomes the last one: it is not rolled
        over at its boundary, so requests completing during the stop grace land in it."""
        self._last_k = max(self.k, math.ceil((load_end - self.load_start) / self.interval_s) - 1)
        if self.k >= self._last_k:
            self.roll_at = math.inf

    def tick(self, now: float) -> None:
        """Close every interval that ended before ``now`` (cheap when none did)."""
        if now >= self.roll_at:
            self.roll(now)

    def roll(self, now: float) -> None:
        while now >= self.roll_at and not self.finished:
            self._close(self.interval_s)
            self.k += 1
            self.roll_at = math.inf if self.k >= self._last_k else self.interval_start(self.k + 1)

    def finish(self, now: float) -> None:
        """Close intervals up to ``now`` and the current one as a partial interval.

        The last interval ends at ``now``: when it was held open for in-flight requests
        (``set_load_end``) it can be longer than ``interval_s``; ``dt`` says so."""
        if self.finished:
            return
        while self.k < self._last_k and now >= self.interval_start(self.k + 1):
            self._close(self.interval_s)
            self.k += 1
        self._close(max(0.0, now - self.interval_start(self.k)))
        self.finished = True
        self.k += 1
        if self.files:
            self.files.write_index(self._series.values(), force=True)

    def _close(self, dt: float) -> None:
        k, counts = self.k, self.counts
        self.counts = IntervalCounts()
        if self.interval_hook is not None:
            counts.add(self.interval_hook(k, self.interval_start(k) + self.interval_s))
        hists = {}
        for s in self._series.values():
            h = s.hist
            if h.total_count:
                hists[s.key] = h
                s.hist = new_histogram()
        if self.files is not None:
            self._emit(k, dt, hists, counts)
            release(hists.values())
            return
        shipped = []
        for s in self._series.values():
            h = hists.get(s.key)
            if h is not None or s.out_of_range:
                encoded = h.encode().decode("ascii") if h is not None else None
                shipped.append([*s.key, encoded, s.out_of_range])
                s.out_of_range = 0  # the master holds the count from now on
        release(hists.values())
        self._outbox.append({"k": k, "dt": dt, "c": counts.to_dict(), "h": shipped})

    # -- worker ---------------------------------------------------------------------------
    def take_encoded(self) -> dict[str, Any]:
        """Closed intervals since the last call, for the master (msgpack-serialisable)."""
        out, self._outbox = self._outbox, []
        return {"closed_through": self.k - 1, "final": self.finished, "intervals": out}

    # -- master ---------------------------------------------------------------------------
    def add_source(self, source: str) -> None:
        """Expect reports from ``source``: intervals wait for it (up to ``grace_s``)."""
        self._sources.setdefault(source, -1)

    def reported_through(self, source: str) -> int:
        """The last interval ``source`` reported as closed (-1: none)."""
        done = self._sources.get(source, -1)
        return int(done) if math.isfinite(done) else self.k - 1

    def merge_encoded(self, source: str, report: dict[str, Any]) -> None:
        """Add one worker report (from ``take_encoded``) into the pending intervals.

        Histograms are added bucket by bucket, so the merged interval equals one histogram
        holding every worker's values."""
        self.add_source(source)
        for item in report.get("intervals", []):
            # An interval arriving after its grace expired is added to the next unwritten
            # one: late, but never lost.
            k = max(int(item["k"]), self._next_flush)
            p = self._pending.setdefault(k, {"dt": 0.0, "c": IntervalCounts(), "h": {}})
            p["dt"] = max(p["dt"], float(item["dt"]))
            p["c"].add(item["c"])
            n = int(item["c"].get("requests", 0))
            self.source_requests[source] = self.source_requests.get(source, 0) + n
            if self.interval_start(int(item["k"])) >= self.measure_start - 1e-9:
                self.source_measured[source] = self.source_measured.get(source, 0) + n
            for metric, name, stage, tag, encoded, oor in item["h"]:
                s = self.series(metric, name, stage, tag)
                other = HdrHistogram.decode(encoded) if encoded is not None else None
                if isinstance(s, RefusedSeries):  # the workers' union passed the cap
                    p["c"].over_series_limit += other.total_count if other else 0
                elif other is not None:
                    h = p["h"].get(s.key)
                    if h is None:
                        h = p["h"][s.key] = new_histogram()
                    h.add(other)  # decode_and_add, minus the cycle
                s.out_of_range += int(oor)
                if other is not None:
                    release([other])
        closed = math.inf if report.get("final") else int(report.get("closed_through", -1))
        self._sources[source] = max(self._sources[source], closed)

    def flush_merged(self, now: float, final: bool = False) -> None:
        """Write, in order, every interval that all sources have reported past or whose
        grace expired; with ``final``, everything pending."""
        reported = min(self._sources.values(), default=-1)
        last_pending = max(self._pending, default=-1)
        while True:
            k = self._next_flush
            end = self.interval_start(k + 1)
            if final:
                if k > last_pending:
                    break
            elif end > now or not (k <= reported or now >= end + self.grace_s):
                break
            p = self._pending.pop(k, None)
            if p is None:
                p = {"dt": self.interval_s, "c": IntervalCounts(), "h": {}}
            self._emit(k, p["dt"] or self.interval_s, p["h"], p["c"])
            release(p["h"].values())
            self._next_flush = k + 1
        if final:
            self.finished = True
            if self.files:
                self.files.write_index(self._series.values(), force=True)

    def bounds(self) -> dict[str, int]:
        """The run's series cap and what it cut (load.json ``bounds``)."""
        return {"series_limit": self.max_series, "series": len(self._series),
                "values_over_series_limit": self.over_series_limit}

    # -- writing --------------------------------------------------------------------------
    def _emit(
        self, k: int, dt: float, hists: dict[SeriesKey, HdrHistogram], counts: IntervalCounts
    ) -> None:
        start = self.interval_start(k)
        warmup = start < self.measure_start - 1e-9
        merged = new_histogram()
        for key, h in hists.items():
            s = self._series[key]
            s.count += h.total_count
            if not warmup:
                s.total.add(h)
            if key.metric == "client" and key.tag is None:
                merged.add(h)
        assert self.files is not None
        self.files.write_interval(start, dt, [(self._series[key], h) for key, h in hists.items()])
        self.files.write_index(self._series.values())
        pct = merged.get_percentile_to_value_dict([50.0, 99.0]) if merged.total_count else {}
        release([merged])
        record: dict[str, Any] = {
            "t": round(start, 6), "dt": round(dt, 6), "warmup": warmup,
            "requests": counts.requests, "failures": counts.failures,
            "by_name": counts.by_name_dict(), "errors": dict(counts.errors),
        }
        if self.open_model:
            record.update(scheduled=counts.scheduled, started=counts.started, late=counts.late)
        record["users"] = self.users() if self.users is not None else None
        record["p50_us"] = pct.get(50.0)
        record["p99_us"] = pct.get(99.0)
        self.files.append_interval(record)
        self.over_series_limit += counts.over_series_limit
        if not warmup:
            self.measured.add(counts.to_dict())
            if self.measured_since is None:
                self.measured_since = start
        self.last_end = max(self.last_end, start + dt)
        if self.on_interval is not None:
            self.on_interval(record)
