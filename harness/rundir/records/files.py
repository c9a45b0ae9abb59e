"""Records of the smaller files the analysis reads: the entries of latency/series.json,
profile/status.json and the prometheus collector's status in run.json (fields:
docs/internals.md, docs/collectors.md and docs/monitoring.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.rundir.records.base import as_map, opt

__all__ = ["OncpuCheck", "ProfileStatus", "ProfilerCost", "ScrapeStatus", "SeriesEntry",
           "StageMapChoice"]


@dataclass(frozen=True)
class SeriesEntry:
    """One histogram series of latency/series.json: ``metric`` (client, stage, residual, …),
    request ``name``, ``stage`` (stage series only), ``tag`` (``"key=value"`` or None) and the
    values dropped as outside the histogram's range."""

    file: str
    metric: str | None
    name: str | None
    stage: str | None = None
    tag: str | None = None
    out_of_range: int = 0

    @property
    def is_request(self) -> bool:
        """A series of whole requests (successful or failed), not a stage or the residual."""
        return self.metric in ("client", "client_failed")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency/series.json: series[]") -> SeriesEntry:
        d = as_map(d, where)
        return cls(str(d.get("file") or ""), d.get("metric"), d.get("name"), d.get("stage"),
                   d.get("tag"), int(d.get("out_of_range") or 0))


def _num(d: Mapping[str, Any], key: str) -> float | None:
    value = d.get(key)
    return None if value is None or isinstance(value, bool) else float(value)


@dataclass(frozen=True)
class OncpuCheck:
    """status.json ``oncpu_check``: the on-CPU samples (s of threads at the profile rate)
    against the CPU and run-queue seconds the kernel measured for the same processes."""

    #: ``ok``, ``runnable_counted`` (time waiting for a CPU counted), ``idle_counted``
    #: (waiting threads counted as running), ``over_cpu`` (more than the CPU, cause
    #: unknown), ``unknown``
    verdict: str
    detail: str = ""
    sampled_s: float | None = None
    cpu_s: float | None = None
    runq_s: float | None = None
    #: sampled_s / cpu_s
    ratio: float | None = None
    #: py-spy ran in blocking mode (its stops make the threads runnable)
    blocking: bool = False
    #: share of the on-CPU samples whose leaf is a blocking call
    wait_leaf_share: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "oncpu_check") -> OncpuCheck:
        d = as_map(d, where)
        return cls(str(d.get("verdict") or "unknown"), str(d.get("detail") or ""),
                   _num(d, "sampled_s"), _num(d, "cpu_s"), _num(d, "runq_s"), _num(d, "ratio"),
                   bool(d.get("blocking")), _num(d, "wait_leaf_share"))


@dataclass(frozen=True)
class ProfilerCost:
    """status.json ``cost``: what py-spy took from the service."""

    blocking: bool = False
    pyspy_cpu_s: float | None = None
    #: py-spy's CPU as % of one core over the window
    pyspy_core_pct: float | None = None
    #: py-spy's CPU / the sampled processes' CPU
    service_cpu_share: float | None = None
    #: blocking mode: the longest a process stood stopped, share of its span (upper bound)
    paused_share: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "cost") -> ProfilerCost:
        d = as_map(d, where)
        return cls(bool(d.get("blocking")), _num(d, "pyspy_cpu_s"), _num(d, "pyspy_core_pct"),
                   _num(d, "service_cpu_share"), _num(d, "paused_share"))


@dataclass(frozen=True)
class StageMapChoice:
    """status.json / stages.json ``stage_map``: which map read the profile and why."""

    name: str | None
    #: ``given`` (--stage-map), ``served`` (the service the harness started), ``auto``
    chosen: str | None = None
    other_share: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "stage_map") -> StageMapChoice:
        if isinstance(d, str):  # files before the choice existed: the map's path
            return cls(d)
        d = as_map(d, where)
        return cls(d.get("name"), d.get("chosen"), _num(d, "other_share"))


@dataclass(frozen=True)
class ScrapeStatus:
    """run.json ``collectors.prometheus``: were the target's metrics scraped, and where."""

    ok: bool
    reason: str | None = None
    url: str | None = None
    scrapes: int = 0
    #: the first failed scrape in a few words ("HTTP 404 at http://.../metrics")
    failure: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "collectors.prometheus") -> ScrapeStatus:
        d = as_map(d, where)
        url, failure = d.get("url"), d.get("failure")
        return cls(bool(d.get("ok")), d.get("reason"), url if isinstance(url, str) else None,
                   int(d.get("scrapes") or 0), failure if isinstance(failure, str) else None)


@dataclass(frozen=True)
class ProfileStatus:
    """profile/status.json as the self-check and the diagnosis read it."""

    ok: bool
    reason: str | None = None
    samples: int = 0
    errors: int = 0
    rate_hz: float | None = None
    lag_warnings: int = 0
    #: how far py-spy fell behind at worst, s (older files: ``lag_s``)
    max_lag_s: float = 0.0
    window_start: float | None = None
    window_end: float | None = None
    #: CPU py-spy itself used, s
    cpu_s: float | None = None
    missed_processes: int = 0
    target_exited: bool = False
    failed_processes: Any = None
    note: str | None = None
    #: py-spy ran with --nonblocking (None: not recorded)
    nonblocking: bool | None = None
    oncpu_check: OncpuCheck | None = None
    cost: ProfilerCost | None = None
    stage_map: StageMapChoice | None = None

    @property
    def window_s(self) -> float:
        """Length of the sampled window, s (0 when unknown)."""
        return (self.window_end or 0.0) - (self.window_start or 0.0)

    @classmethod
    def from_dict(cls, d: Any, where: str = "profile/status.json") -> ProfileStatus:
        d = as_map(d, where)
        window = as_map(d.get("window") or {}, f"{where}: window")
        try:
            return cls(bool(d.get("ok", False)), d.get("reason"), int(d.get("samples") or 0),
                       int(d.get("errors") or 0), d.get("rate_hz"),
                       int(d.get("lag_warnings") or 0),
                       float(d.get("max_lag_s") or d.get("lag_s") or 0.0),
                       window.get("start"), window.get("end"), d.get("cpu_s"),
                       int(d.get("missed_processes") or 0), bool(d.get("target_exited")),
                       d.get("failed_processes"), d.get("note"),
                       None if d.get("nonblocking") is None else bool(d["nonblocking"]),
                       opt(d, "oncpu_check", where, OncpuCheck.from_dict),
                       opt(d, "cost", where, ProfilerCost.from_dict),
                       opt(d, "stage_map", where, StageMapChoice.from_dict))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
