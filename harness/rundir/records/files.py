"""Records of the smaller files the analysis reads: the entries of latency/series.json and
profile/status.json (fields: docs/internals.md and docs/collectors.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.rundir.records.base import as_map

__all__ = ["ProfileStatus", "SeriesEntry"]


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
                       d.get("failed_processes"), d.get("note"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
