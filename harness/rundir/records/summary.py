"""The ``Summary`` record (summary.json) and its parts other than latency: the window, the
load block, resources, profile shares and the self-check entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.rundir.records.base import as_map, items, need, opt, present
from harness.rundir.records.latency import Breakdown, RequestRow, TagRow
from harness.rundir.records.remote import HostResources, TargetProcessResources

__all__ = ["CHECK_SEVERITIES", "CheckEntry", "Lateness", "LoadBlock", "LoadgenResources",
           "ProcessCPU", "ProfileView", "Resources", "ServiceResources", "Summary",
           "SystemResources", "Window"]

CHECK_SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class ProcessCPU:
    """CPU of one process over the window (% of one core); ``saturated_share``: the
    fraction of its samples above the load generator's saturation threshold."""

    pid: int
    role: str
    cpu_mean_pct: float
    cpu_p95_pct: float
    cpu_max_pct: float
    saturated_share: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any, where: str = "process") -> ProcessCPU:
        d = as_map(d, where)
        return cls(*(need(d, k, where) for k in ("pid", "role", "cpu_mean_pct", "cpu_p95_pct",
                                                 "cpu_max_pct", "saturated_share")))


@dataclass(frozen=True)
class ServiceResources:
    """The service's process tree: CPU per sample (% of one core, summed), its workers,
    and resident memory summed over the tree."""

    cpu_mean_pct: float
    cpu_p95_pct: float
    cpu_max_pct: float
    workers: tuple[ProcessCPU, ...]
    rss_start_bytes: int
    rss_end_bytes: int
    rss_max_bytes: int
    rss_growth_bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", tuple(self.workers))

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "workers": [w.to_dict() for w in self.workers]}

    @classmethod
    def from_dict(cls, d: Any, where: str = "resources.service") -> ServiceResources:
        d = as_map(d, where)
        rss = [int(need(d, f"rss_{k}_bytes", where)) for k in ("start", "end", "max", "growth")]
        return cls(need(d, "cpu_mean_pct", where), need(d, "cpu_p95_pct", where),
                   need(d, "cpu_max_pct", where), items(d, "workers", where, ProcessCPU.from_dict),
                   *rss)


@dataclass(frozen=True)
class LoadgenResources:
    """The load generator's processes: summed CPU per sample, and each process."""

    cpu_mean_pct: float
    cpu_max_pct: float
    processes: tuple[ProcessCPU, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "processes", tuple(self.processes))

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "processes": [p.to_dict() for p in self.processes]}

    @classmethod
    def from_dict(cls, d: Any, where: str = "resources.loadgen") -> LoadgenResources:
        d = as_map(d, where)
        return cls(need(d, "cpu_mean_pct", where), need(d, "cpu_max_pct", where),
                   items(d, "processes", where, ProcessCPU.from_dict))


@dataclass(frozen=True)
class SystemResources:
    """The whole machine's CPU, % of all cores (0-100)."""

    cpu_mean_pct: float
    cpu_p95_pct: float
    cpu_max_pct: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any, where: str = "resources.system") -> SystemResources:
        d = as_map(d, where)
        return cls(*(need(d, k, where) for k in ("cpu_mean_pct", "cpu_p95_pct", "cpu_max_pct")))


def _probe(d: Any, where: str) -> dict[str, float]:
    d = as_map(d, where)
    return {k: float(need(d, k, where))
            for k in ("mean_us", "median_us", "p10_us", "p90_us", "samples")}


@dataclass(frozen=True)
class Resources:
    """psutil samples inside the measured window; ``machine_share``: mean CPU of the
    service and of the load generator as fractions of the whole machine."""

    samples: int
    cpu_count: int
    service: ServiceResources | None = None
    loadgen: LoadgenResources | None = None
    system: SystemResources | None = None
    machine_share: dict[str, float | None] | None = None
    #: a target on another host: its process from its /metrics process_*, its host from
    #: node_exporter (harness.rundir.records.remote); psutil's ``service`` stays primary
    target_process: TargetProcessResources | None = None
    host: HostResources | None = None
    #: the machine's CPU speed over the window (harness.run.collectors.cpuprobe): mean,
    #: median, p10, p90 of the CPU time (µs) of a fixed unit of work, and the probes' count
    cpu_probe: dict[str, float] | None = None

    def share(self, who: str) -> float:
        """The machine share of ``service`` or ``loadgen``, 0.0 when unknown."""
        return float((self.machine_share or {}).get(who) or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "cpu_count": self.cpu_count,
                **present(service=self.service.to_dict() if self.service else None,
                          loadgen=self.loadgen.to_dict() if self.loadgen else None,
                          system=self.system.to_dict() if self.system else None,
                          target_process=self.target_process.to_dict()
                          if self.target_process else None,
                          host=self.host.to_dict() if self.host else None,
                          cpu_probe=dict(self.cpu_probe) if self.cpu_probe else None),
                "machine_share": dict(self.machine_share or {})}

    @classmethod
    def from_dict(cls, d: Any, where: str = "resources") -> Resources:
        d = as_map(d, where)
        return cls(int(need(d, "samples", where)), int(need(d, "cpu_count", where)),
                   opt(d, "service", where, ServiceResources.from_dict),
                   opt(d, "loadgen", where, LoadgenResources.from_dict),
                   opt(d, "system", where, SystemResources.from_dict),
                   dict(as_map(d.get("machine_share") or {}, f"{where}.machine_share")),
                   opt(d, "target_process", where, TargetProcessResources.from_dict),
                   opt(d, "host", where, HostResources.from_dict),
                   opt(d, "cpu_probe", where, _probe))


@dataclass(frozen=True)
class ProfileView:
    """One profile view (``oncpu``, ``wall``): its samples and their share per stage, and the
    stage map that made them (its name; ``chosen``: given, served or auto)."""

    samples: int
    shares: dict[str, float]
    stage_map: str | None = None
    chosen: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "shares": dict(self.shares)}
        if self.stage_map is not None:
            out["stage_map"] = present(name=self.stage_map, chosen=self.chosen)
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "profile") -> ProfileView:
        d = as_map(d, where)
        smap = as_map(d.get("stage_map") or {}, f"{where}.stage_map")
        return cls(int(need(d, "samples", where)), dict(as_map(need(d, "shares", where), where)),
                   smap.get("name"), smap.get("chosen"))


@dataclass(frozen=True)
class Window:
    """The measured window (epoch s; None when nothing was measured)."""

    start: float | None
    end: float | None
    duration_s: float
    planned_duration_s: float | None = None
    #: the load before the window, kept out of the results (None: not recorded)
    warmup_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if d["warmup_s"] is None:
            del d["warmup_s"]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "window") -> Window:
        d = as_map(d, where)
        return cls(d.get("start"), d.get("end"), float(need(d, "duration_s", where)),
                   d.get("planned_duration_s"), d.get("warmup_s"))


@dataclass(frozen=True)
class Lateness:
    """Open model: actual task start minus intended start, µs."""

    p50_us: int | None
    p99_us: int | None
    max_us: int | None
    mean_us: float | None = None


@dataclass(frozen=True, kw_only=True)
class LoadBlock:
    """What load was asked and achieved (``source``: load.json, or intervals.jsonl when the
    driver died); the open model adds the schedule counts and ``lateness``."""

    source: str | None
    target_rps: float | None
    nominal_rps: float | None = None
    achieved_rps: float | None
    users: int | None = None
    workers: int | None = None
    scheduled: int | None = None
    started: int | None = None
    late: int | None = None
    dropped: int | None = None
    stopped_early: bool | None
    stop_reason: str | None = None
    lateness: Lateness | None = None
    #: the load generator's own share of the late starts (harness/load/pacing.py)
    late_loop: int | None = None
    lateness_loop: Lateness | None = None
    #: what ``achieved_rps`` counts (harness.rundir.records.load.achieved_count): "started"
    #: (open model: the window's intended starts that were made) or "requests" (answered)
    achieved_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        late, loop = self.lateness, self.lateness_loop
        return {k: getattr(self, k) for k in (
            "source", "target_rps", "nominal_rps", "achieved_rps", "users", "workers",
            "scheduled", "started", "late", "dropped", "stopped_early", "stop_reason")} | (
            {"achieved_by": self.achieved_by} if self.achieved_by is not None else {}) | (
            {"lateness_p50_us": late.p50_us, "lateness_p99_us": late.p99_us,
             "lateness_max_us": late.max_us} if late is not None else {}) | (
            {"late_loop": self.late_loop, "lateness_loop_p50_us": loop.p50_us,
             "lateness_loop_p99_us": loop.p99_us, "lateness_loop_max_us": loop.max_us,
             "lateness_loop_mean_us": loop.mean_us} if loop is not None else {})

    @classmethod
    def from_dict(cls, d: Any, where: str = "load") -> LoadBlock:
        d = as_map(d, where)
        keys = ("lateness_p50_us", "lateness_p99_us", "lateness_max_us")
        return cls(source=d.get("source"), target_rps=d.get("target_rps"),
                   # files from before the nominal rate was kept: the target is the nominal
                   nominal_rps=d["nominal_rps"] if "nominal_rps" in d else d.get("target_rps"),
                   achieved_rps=d.get("achieved_rps"), users=d.get("users"),
                   workers=d.get("workers"), scheduled=d.get("scheduled"),
                   started=d.get("started"), late=d.get("late"), dropped=d.get("dropped"),
                   stopped_early=d.get("stopped_early"), stop_reason=d.get("stop_reason"),
                   lateness=Lateness(*(d.get(k) for k in keys))
                   if any(k in d for k in keys) else None, late_loop=d.get("late_loop"),
                   lateness_loop=Lateness(*(d.get(f"lateness_loop_{k}_us")
                                            for k in ("p50", "p99", "max", "mean")))
                   if "lateness_loop_p50_us" in d else None,
                   achieved_by=d.get("achieved_by"))


@dataclass(frozen=True)
class CheckEntry:
    """One self-check: ``{check, ok, severity, detail}`` in summary.json. ``severity`` is
    what a failure means (``error``: the run is degraded; ``warning``; ``info``); a check
    that passed is ``info``. The detail carries the numbers the check compared."""

    check: str
    ok: bool
    severity: str
    detail: str

    def __post_init__(self) -> None:
        if self.severity not in CHECK_SEVERITIES:
            raise ValueError(f"severity must be one of {CHECK_SEVERITIES} "
                             f"(got {self.severity!r})")

    @classmethod
    def judged(cls, check: str, ok: bool, severity: str, detail: str) -> CheckEntry:
        """A check's outcome: ``severity`` applies when it failed; a pass is ``info``."""
        return cls(check, bool(ok), "info" if ok else severity, detail)

    @property
    def is_error(self) -> bool:
        """Failed with severity error: the run's numbers are not what they claim."""
        return not self.ok and self.severity == "error"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any, where: str = "self_check[]") -> CheckEntry:
        d = as_map(d, where)
        return cls(str(need(d, "check", where)), bool(need(d, "ok", where)),
                   str(need(d, "severity", where)), str(need(d, "detail", where)))


@dataclass(frozen=True, kw_only=True)
class Summary:
    """summary.json: the summary of one run (docs/run-directory.md has every field)."""

    schema_version: str
    run_id: str
    status: str | None
    generated_at: float
    model: str | None
    window: Window
    percentiles: tuple[float, ...]
    confidence: float
    #: percentile key -> successful requests a bound of it needs
    min_samples: dict[str, int]
    load: LoadBlock
    #: one row per request name, then all requests together (name ``"*"``)
    requests: tuple[RequestRow, ...]
    tags: tuple[TagRow, ...] = ()
    #: request name (``"*"``: all) -> where its time went
    stages: dict[str, Breakdown]
    resources: Resources | None = None
    profile: dict[str, ProfileView] | None = None
    self_check: tuple[CheckEntry, ...] = ()
    #: no self-check of severity error failed
    ok: bool = True
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("percentiles", "requests", "tags", "self_check", "warnings"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.requests or self.requests[-1].name != "*":
            raise ValueError("requests must end with the row of all requests, named '*' "
                             f"(got {[r.name for r in self.requests]})")

    @property
    def total(self) -> RequestRow:
        """The row of all requests together."""
        return self.requests[-1]

    @property
    def named(self) -> tuple[RequestRow, ...]:
        """The rows of each request name (without ``"*"``)."""
        return self.requests[:-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "run_id": self.run_id,
            "status": self.status, "generated_at": self.generated_at, "model": self.model,
            "window": self.window.to_dict(), "percentiles": list(self.percentiles),
            "confidence": self.confidence, "min_samples": dict(self.min_samples),
            "load": self.load.to_dict(), "requests": [r.to_dict() for r in self.requests],
            "tags": [t.to_dict() for t in self.tags],
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
            "resources": self.resources.to_dict() if self.resources else None,
            "profile": {k: v.to_dict() for k, v in self.profile.items()}
            if self.profile is not None else None,
            "self_check": [c.to_dict() for c in self.self_check], "ok": self.ok,
            "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "summary.json") -> Summary:
        d = as_map(d, where)
        profile = d.get("profile")
        return cls(
            schema_version=str(need(d, "schema_version", where)),
            run_id=str(need(d, "run_id", where)), status=d.get("status"),
            generated_at=float(d.get("generated_at") or 0.0), model=d.get("model"),
            window=Window.from_dict(need(d, "window", where), f"{where}: window"),
            percentiles=tuple(need(d, "percentiles", where)),
            confidence=float(need(d, "confidence", where)),
            min_samples={str(k): int(v) for k, v in as_map(
                need(d, "min_samples", where), f"{where}: min_samples").items()},
            load=LoadBlock.from_dict(need(d, "load", where), f"{where}: load"),
            requests=items(d, "requests", where, RequestRow.from_dict),
            tags=items(d, "tags", where, TagRow.from_dict),
            stages={str(k): Breakdown.from_dict(v, f"{where}: stages.{k}") for k, v in
                    as_map(d.get("stages") or {}, f"{where}: stages").items()},
            resources=opt(d, "resources", where, Resources.from_dict),
            profile=None if profile is None else {
                str(k): ProfileView.from_dict(v, f"{where}: profile.{k}")
                for k, v in as_map(profile, f"{where}: profile").items()},
            self_check=items(d, "self_check", where, CheckEntry.from_dict),
            ok=bool(d.get("ok", True)), warnings=tuple(d.get("warnings") or ()))
