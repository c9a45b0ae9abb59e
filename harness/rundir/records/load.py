"""The ``LoadReport`` record: load.json, what the load driver achieved (written at the end).

``RunDir.load()`` adds ``source`` (``"load.json"``, or ``"intervals.jsonl"`` when the
driver died and the totals were rebuilt from the intervals: then most counters are
missing). Schema: harness/rundir/schemas/load.schema.json; meaning of every field:
docs/internals.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.rundir.records.base import as_map, present

__all__ = ["ACHIEVED_BY", "LoadReport", "Measured", "achieved_count"]

_MEASURED_OPTIONAL = ("scheduled", "started", "late", "dropped", "late_threshold_us",
                      "late_loop", "achieved", "achieved_by", "scheduled_estimated")

#: what ``achieved`` counts: the window's intended starts that were made (open model), or
#: the requests answered in the window (closed model; open model when fewer than started)
ACHIEVED_BY = ("started", "requests")


def achieved_count(requests: int, started: int | None = None,
                   scheduled: int | None = None) -> tuple[int, str]:
    """(count, what it counts) behind ``achieved_rps``: one definition for load.json and
    summary.json.

    Requests are counted when they complete, so in the open model ``requests`` also holds
    the warm-up's backlog answered in the window and the tail answered in the stop's grace
    (at 26 req/s with 0.5 s latencies, 31 req/s "achieved"). The open model counts by
    intended start instead: the window's starts that were made (``started``), unless fewer
    requests were answered (the service fell behind, or tasks that send nothing), and never
    more than the schedule held (``scheduled``: a start in the instant after the end). So
    achieved <= target (scheduled / seconds). A task that sends two requests counts once,
    as in the target. Without ``started`` (closed model): the requests answered.
    """
    if started is None:
        return requests, "requests"
    made = min(started, scheduled) if scheduled is not None else started
    return (made, "started") if made <= requests else (requests, "requests")


@dataclass(frozen=True)
class Measured:
    """Counts over the measured window: ``requests`` and ``failures`` by completion time
    (the stop's grace included), the schedule's counts by intended start; ``achieved`` is
    ``achieved_count``'s."""

    requests: int | None = None
    failures: int | None = None
    achieved_rps: float | None = None
    scheduled: int | None = None
    started: int | None = None
    late: int | None = None
    dropped: int | None = None
    late_threshold_us: int | None = None
    #: of the late starts, those the load generator's own loop made late
    late_loop: int | None = None
    #: the count behind ``achieved_rps`` and what it counts (``achieved_count``)
    achieved: int | None = None
    achieved_by: str | None = None
    #: of ``scheduled``, the share of workers lost mid-run (their counts never came: as
    #: many as the other workers' mean; harness/load/distributed.py)
    scheduled_estimated: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "failures": self.failures,
                "achieved_rps": self.achieved_rps,
                **present(**{k: getattr(self, k) for k in _MEASURED_OPTIONAL})}

    @classmethod
    def from_dict(cls, d: Any, where: str = "load.json: measured") -> Measured:
        d = as_map(d, where)
        return cls(*(d.get(k) for k in ("requests", "failures", "achieved_rps",
                                        *_MEASURED_OPTIONAL)))


_CORE = ("model", "arrival", "target_rps", "nominal_rps", "rate_shape", "users", "duration_s",
         "warmup_s")
_COUNTERS = ("negative_residuals", "server_timing_missing", "server_timing_malformed")
_OPTIONAL = ("unanswered", "unanswered_long", "out_of_range", "workers_reported",
             "timeline", "bounds", "source", "workers_detail", "workers_lost")
_KNOWN = {*_CORE, *_COUNTERS, *_OPTIONAL, "measured", "errors", "workers", "stopped_early",
          "stop_reason"}


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    """load.json. Counters missing from an older or rebuilt file read as 0, except
    ``unanswered``/``unanswered_long``: None means the driver did not count them."""

    model: str | None = None
    arrival: str | None = None
    target_rps: float | None = None
    #: the rate asked for (``target_rps`` is what the schedule held in the window)
    nominal_rps: float | None = None
    #: the rate shape of a shaped open-model run (docs/load-driver.md), else None
    rate_shape: Any = None
    users: int | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    measured: Measured = field(default_factory=Measured)
    negative_residuals: int = 0
    server_timing_missing: int = 0
    server_timing_malformed: int = 0
    #: ``"name|error" -> count`` over the measured window
    errors: dict[str, int] = field(default_factory=dict)
    workers: int | None = None
    stopped_early: bool | None = None
    stop_reason: str | None = None
    unanswered: int | None = None
    unanswered_long: int | None = None
    out_of_range: int | None = None
    workers_reported: int | None = None
    timeline: dict[str, Any] | None = None
    #: the driver's bounds on what the target controls and what they cut
    #: (``series_limit``, ``series``, ``values_over_series_limit``)
    bounds: dict[str, Any] | None = None
    source: str | None = None
    #: per Locust worker: id, host, remote, clock offset and round trip at connect
    #: (``offset_ms``, ``rtt_ms``) and during the run (``run_offset_ms``, ``run_rtt_ms``),
    #: requests merged from it, lost (harness/load/distributed.py)
    workers_detail: list[dict[str, Any]] | None = None
    #: workers lost mid-run: id, host, why, lost_at, after_s, intervals/requests reported
    workers_lost: list[dict[str, Any]] | None = None
    #: keys this version does not know (kept, written back)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _CORE}, "measured": self.measured.to_dict(),
                **{k: getattr(self, k) for k in _COUNTERS}, "errors": dict(self.errors),
                "workers": self.workers, "stopped_early": self.stopped_early,
                "stop_reason": self.stop_reason,
                **present(**{k: getattr(self, k) for k in _OPTIONAL}), **self.extra}

    @classmethod
    def from_dict(cls, d: Any, where: str = "load.json") -> LoadReport:
        d = as_map(d, where)
        fields: dict[str, Any] = {k: d.get(k) for k in (*_CORE, *_OPTIONAL, "workers",
                                                         "stopped_early", "stop_reason")}
        try:
            # files from before the nominal rate was kept: the target is the nominal
            fields["nominal_rps"] = d["nominal_rps"] if "nominal_rps" in d \
                else d.get("target_rps")
            fields.update({k: int(d.get(k) or 0) for k in _COUNTERS})
            return cls(
                **fields,
                measured=Measured.from_dict(d.get("measured") or {}, f"{where}: measured"),
                errors={str(k): int(v) for k, v in
                        as_map(d.get("errors") or {}, f"{where}: errors").items()},
                extra={k: v for k, v in d.items() if k not in _KNOWN})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    @property
    def transport_errors(self) -> dict[str, int]:
        """Errors that are not an HTTP status (timeouts, resets, not HTTP), by type."""
        by_type: dict[str, int] = {}
        for key, n in self.errors.items():
            kind = key.rsplit("|", 1)[-1]
            if not kind.startswith("HTTP "):
                by_type[kind] = by_type.get(kind, 0) + n
        return by_type
