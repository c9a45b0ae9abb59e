"""Records of summary.json's latency parts: latency blocks, request and tag rows, and the
stage breakdown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.rundir.records.base import as_map, items, need, opt, present

__all__ = ["PERCENTILE_KEYS", "Breakdown", "Latencies", "LatencyBlock", "RequestRow",
           "StageRow", "TagRow"]

#: the percentile keys of every latency block of summary.json
PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "p999")


@dataclass(frozen=True, kw_only=True)
class LatencyBlock:
    """Latency of one series over the measured window (µs); ``low_samples``: percentile keys
    with fewer samples than a bound of them needs (the value is shown, not bounded)."""

    count: int
    min_us: int | None = None
    max_us: int | None = None
    mean_us: float | None = None
    p50_us: int | None = None
    p90_us: int | None = None
    p95_us: int | None = None
    p99_us: int | None = None
    p999_us: int | None = None
    low_samples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0 (got {self.count!r})")
        object.__setattr__(self, "low_samples", tuple(self.low_samples))

    def percentile_us(self, key: str) -> int | None:
        """The value of a percentile key of summary.json (``"p99"``, ``"p999"``)."""
        if key not in PERCENTILE_KEYS:
            raise ValueError(f"percentile key must be one of {PERCENTILE_KEYS} (got {key!r})")
        value: int | None = getattr(self, f"{key}_us")
        return value

    def is_low(self, key: str) -> bool:
        return key in self.low_samples

    def _fields(self) -> dict[str, Any]:
        return {"count": self.count, "min_us": self.min_us, "max_us": self.max_us,
                "mean_us": self.mean_us,
                **{f"{k}_us": getattr(self, f"{k}_us") for k in PERCENTILE_KEYS},
                "low_samples": list(self.low_samples)}

    def to_dict(self) -> dict[str, Any]:
        return self._fields()

    @staticmethod
    def _read(d: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {"count": int(need(d, "count", where)), "min_us": d.get("min_us"),
                "max_us": d.get("max_us"), "mean_us": d.get("mean_us"),
                **{f"{k}_us": d.get(f"{k}_us") for k in PERCENTILE_KEYS},
                "low_samples": tuple(d.get("low_samples") or ())}

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency") -> LatencyBlock:
        return cls(**cls._read(as_map(d, where), where))


@dataclass(frozen=True, kw_only=True)
class StageRow(LatencyBlock):
    """A stage of the breakdown (or the residual: ``stage`` None) and its share of the
    summed uncorrected client time."""

    share: float
    stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**present(stage=self.stage), **self._fields(), "share": self.share}

    @classmethod
    def from_dict(cls, d: Any, where: str = "stage") -> StageRow:
        d = as_map(d, where)
        return cls(**cls._read(d, where), share=float(need(d, "share", where)),
                   stage=d.get("stage"))


@dataclass(frozen=True)
class Latencies:
    """A row's latency blocks: ``client``, and in the open model ``client_uncorrected``."""

    client: LatencyBlock
    client_uncorrected: LatencyBlock | None = None

    def get(self, metric: str) -> LatencyBlock | None:
        if metric not in ("client", "client_uncorrected"):
            raise ValueError(f"metric must be client or client_uncorrected (got {metric!r})")
        block: LatencyBlock | None = getattr(self, metric)
        return block

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client.to_dict(),
                **present(client_uncorrected=self.client_uncorrected.to_dict()
                           if self.client_uncorrected else None)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency") -> Latencies:
        d = as_map(d, where)
        return cls(LatencyBlock.from_dict(need(d, "client", where), f"{where}.client"),
                   opt(d, "client_uncorrected", where, LatencyBlock.from_dict))


@dataclass(frozen=True, kw_only=True)
class _Row:
    count: int
    rps: float | None
    failures: int
    fail_pct: float | None
    latency: Latencies
    #: error -> count (request rows only)
    errors: dict[str, int] | None = None

    def _fields(self) -> dict[str, Any]:
        return {"count": self.count, "rps": self.rps, "failures": self.failures,
                "fail_pct": self.fail_pct, "latency": self.latency.to_dict(),
                **present(errors=dict(self.errors) if self.errors is not None else None)}

    @staticmethod
    def _read(d: Mapping[str, Any], where: str) -> dict[str, Any]:
        errors = d.get("errors")
        return {"count": int(need(d, "count", where)), "rps": d.get("rps"),
                "failures": int(need(d, "failures", where)), "fail_pct": d.get("fail_pct"),
                "latency": Latencies.from_dict(need(d, "latency", where), f"{where}.latency"),
                "errors": None if errors is None else {str(k): int(v)
                                                       for k, v in as_map(errors, where).items()}}


@dataclass(frozen=True, kw_only=True)
class RequestRow(_Row):
    """One request name (``"*"``: all requests together)."""

    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self._fields()}

    @classmethod
    def from_dict(cls, d: Any, where: str = "requests[]") -> RequestRow:
        d = as_map(d, where)
        return cls(name=str(need(d, "name", where)), **cls._read(d, where))


@dataclass(frozen=True, kw_only=True)
class TagRow(_Row):
    """All requests of one tag value (``tag`` = ``"key=value"``)."""

    tag: str
    key: str
    value: str

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "key": self.key, "value": self.value, **self._fields()}

    @classmethod
    def from_dict(cls, d: Any, where: str = "tags[]") -> TagRow:
        d = as_map(d, where)
        return cls(tag=str(need(d, "tag", where)), key=str(need(d, "key", where)),
                   value=str(need(d, "value", where)), **cls._read(d, where))


@dataclass(frozen=True)
class Breakdown:
    """Where the time of successful requests went (one request name, or ``"*"``)."""

    client_mean_us: float | None
    client_uncorrected_mean_us: float
    #: the stage that is the service's own total (``"app"``, ``"total"``, ``"server"`` for
    #: trace-derived stages...), ``"sum"`` (stages only, their sum) or None (no stage)
    service_total: str | None
    stages: tuple[StageRow, ...]
    residual: StageRow | None
    app_unattributed_share: float | None
    #: corrected minus uncorrected mean client time (None without a corrected mean)
    schedule_delay_us: float | None = None
    #: how the total was found (inferred from the values, given, the traces' server span)
    service_total_how: str | None = None
    #: the residual split: the load generator's own time per request (calibrated against a
    #: local echo at the run's start, harness/load/calibrate.py) and the rest (queueing,
    #: network, the server's HTTP layer), each as mean µs and share of the client time
    residual_split: dict[str, float] | None = None

    @property
    def nested(self) -> bool:
        """The stages are parts of a total stage (rather than siblings to be summed)."""
        return self.service_total not in (None, "sum")

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    def stage(self, name: str) -> StageRow | None:
        return next((s for s in self.stages if s.stage == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"client_mean_us": self.client_mean_us,
                "client_uncorrected_mean_us": self.client_uncorrected_mean_us,
                "service_total": self.service_total,
                "stages": [s.to_dict() for s in self.stages],
                "residual": self.residual.to_dict() if self.residual else None,
                "app_unattributed_share": self.app_unattributed_share,
                **present(schedule_delay_us=self.schedule_delay_us,
                          service_total_how=self.service_total_how,
                          residual_split=self.residual_split)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "stages") -> Breakdown:
        d = as_map(d, where)
        return cls(d.get("client_mean_us"),
                   float(need(d, "client_uncorrected_mean_us", where)),
                   d.get("service_total"), items(d, "stages", where, StageRow.from_dict),
                   opt(d, "residual", where, StageRow.from_dict),
                   d.get("app_unattributed_share"), d.get("schedule_delay_us"),
                   d.get("service_total_how"), d.get("residual_split"))
