"""The request counters of one interval, summable across Locust workers.

Import-safe: no Locust, no gevent (the recorder and the master's merge use it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["IntervalCounts"]


class IntervalCounts:
    """Request counters of one interval (summable across workers)."""

    __slots__ = ("requests", "failures", "by_name", "errors", "negative_residuals",
                 "server_timing_missing", "server_timing_malformed",
                 "scheduled", "started", "late", "late_loop", "unanswered", "unanswered_long",
                 "over_series_limit")
    _INTS = ("requests", "failures", "negative_residuals", "server_timing_missing",
             "server_timing_malformed", "scheduled", "started", "late", "late_loop",
             "unanswered", "unanswered_long", "over_series_limit")
    requests: int
    failures: int
    negative_residuals: int
    server_timing_missing: int
    server_timing_malformed: int
    scheduled: int
    started: int
    late: int
    #: of the late starts, those the load generator's own loop made late (a user was free)
    late_loop: int
    #: requests sent but never answered: their user was stopped while waiting
    unanswered: int
    #: of those, requests that had waited at least UNANSWERED_LONG_S when stopped
    unanswered_long: int
    #: values not recorded: their series would have passed the run's series cap
    over_series_limit: int

    def __init__(self) -> None:
        for field in self._INTS:
            setattr(self, field, 0)
        self.by_name: dict[str, list[int]] = {}  # name -> [requests, failures]
        self.errors: dict[str, int] = {}  # "name|error type" -> count

    def add(self, other: dict[str, Any]) -> None:
        """Add counts given as ``to_dict()`` output (ints may be partial)."""
        for field in self._INTS:
            if field in other:
                setattr(self, field, getattr(self, field) + int(other[field]))
        for name, (req, fail) in other.get("by_name", {}).items():
            row = self.by_name.setdefault(name, [0, 0])
            row[0] += req
            row[1] += fail
        for key, n in other.get("errors", {}).items():
            self.errors[key] = self.errors.get(key, 0) + n

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {field: getattr(self, field) for field in self._INTS}
        d["by_name"] = {name: list(row) for name, row in self.by_name.items()}
        d["errors"] = dict(self.errors)
        return d

    def by_name_dict(self) -> dict[str, dict[str, int]]:
        return {n: {"requests": r[0], "failures": r[1]} for n, r in self.by_name.items()}
