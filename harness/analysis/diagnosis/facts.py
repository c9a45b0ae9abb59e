"""The facts a diagnosis looks at, extracted once from a run directory.

``extract_facts(run)`` reads the run through ``harness.analysis.summary.summarize_record``
(so the numbers are the ones ``harness summary`` shows) plus the few things the summary
does not keep (``trends``): per-sample memory for a growth slope, the profile's stage
samples and function counts, the model versions served, and the histograms a baseline
comparison needs for its confidence intervals. Every field can also be filled by
hand, which is how the rules are unit-tested. ``Finding`` (the rule engine's record,
``harness.analysis.rules``) is re-exported here for the callers that import it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from harness import stats
from harness.analysis.diagnosis import trends
from harness.analysis.rules import LAYERS, SEVERITIES, Finding
from harness.analysis.summary import summarize_record
from harness.rundir import RunDir
from harness.rundir.records import (
    Breakdown,
    CheckEntry,
    LatencyBlock,
    LoadReport,
    ProfileStatus,
    Summary,
)
from harness.rundir.stacks import parse_collapsed

__all__ = ["LAYERS", "SEVERITIES", "Facts", "Finding", "ProfileFacts", "StageFacts",
           "TagFacts", "WorkerFacts", "extract_facts", "stage_layer"]

# Stage names are whatever the service sends in Server-Timing; these patterns place the
# usual names in the engineer's layers. A stage no pattern knows stays in "infrastructure"
# (service code of its own) and is reported under its own name.
_STAGE_LAYERS = (
    ("upstream", re.compile(r"fetch|feature|store|lookup|db|cache|retriev|redis|sql|upstream",
                            re.I)),
    ("model", re.compile(r"infer|predict|model|forward|score|gpu", re.I)),
    ("serialization", re.compile(r"serial|encod|render|response|json|marshal|dump", re.I)),
)


def stage_layer(name: str) -> str:
    """The layer a Server-Timing stage name belongs to (``app`` is the service total)."""
    for layer, pattern in _STAGE_LAYERS:
        if pattern.search(name):
            return layer
    return "infrastructure"


@dataclass(frozen=True)
class StageFacts:
    """Latency of one stage (or the client, or the residual) over successful requests, µs."""

    name: str
    share: float
    mean_us: float
    p50_us: int | None
    p99_us: int | None
    count: int


@dataclass(frozen=True)
class WorkerFacts:
    """CPU of one service worker process (% of one core) over the measured window."""

    pid: int
    cpu_mean_pct: float
    cpu_p95_pct: float
    saturated_share: float


@dataclass(frozen=True)
class TagFacts:
    """One input class (tag value) of the traffic."""

    tag: str
    key: str
    value: str
    count: int
    traffic_share: float
    fail_pct: float
    p50_us: int | None
    p99_us: int | None
    #: p99 of the service's own time (Server-Timing ``app``) for this class: free of the
    #: queueing that one class's slow requests impose on every class
    service_p99_us: int | None = None


@dataclass(frozen=True)
class ProfileFacts:
    """The py-spy profile as the rules need it: samples per stage and per function."""

    samples: int
    rate_hz: float
    window_s: float
    #: on-CPU samples per stage of the stage map (``other`` and ``framework`` included)
    oncpu: dict[str, int] = field(default_factory=dict)
    #: wall view: fraction of a stage's samples spent waiting (I/O, locks); empty without it
    waiting: dict[str, float] = field(default_factory=dict)
    #: per stage, the functions most often running themselves: [(function, samples)]
    top_self: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    #: self (leaf) samples per function over the whole on-CPU profile
    functions: dict[str, int] = field(default_factory=dict)
    lag_warnings: int = 0


@dataclass
class Facts:
    """Everything the rules look at for one run. Times in µs, shares in 0..1."""

    run_id: str
    model: str = "closed"
    status: str | None = "complete"
    scenario: str | None = None
    scenario_sha256: str | None = None
    users: int | None = None
    target_rps: float | None = None
    nominal_rps: float | None = None
    achieved_rps: float | None = None
    duration_s: float = 0.0
    requests: int = 0
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    late: int | None = None
    started: int | None = None
    scheduled: int | None = None
    dropped: int | None = None
    #: open model: mean time requests waited for the load generator, share of the latency
    schedule_delay_share: float = 0.0
    client: StageFacts | None = None
    #: Server-Timing stages other than the service total, by name
    stages: dict[str, StageFacts] = field(default_factory=dict)
    app: StageFacts | None = None
    residual: StageFacts | None = None
    self_check: list[CheckEntry] = field(default_factory=list)
    cpu_count: int = 1
    loadgen_saturated_share: float | None = None
    loadgen_cpu_mean_pct: float | None = None
    service_cpu_mean_pct: float | None = None
    workers: list[WorkerFacts] = field(default_factory=list)
    #: requests the service can serve at once (workers x threads), when known
    concurrency: int | None = None
    rss_start_bytes: int | None = None
    rss_growth_bytes: int | None = None
    rss_slope_bytes_per_s: float | None = None
    rss_fit_r2: float | None = None
    system_cpu_mean_pct: float | None = None
    machine_share: dict[str, float] = field(default_factory=dict)
    tags: list[TagFacts] = field(default_factory=list)
    profile: ProfileFacts | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    #: "client", "residual" and "stage:<name>" histograms of the measured window
    histograms: dict[str, HdrHistogram] = field(default_factory=dict)
    #: the same ("client" and "stage:<name>") per request name, when the run has two or
    #: more names (one name is the merged histograms) and a baseline is compared
    by_name: dict[str, dict[str, HdrHistogram]] = field(default_factory=dict)
    #: interval start (s, rounded to ms) -> (system CPU % of the machine, share of the
    #: machine taken by processes other than the service and the load generator); intervals
    #: without a resources sample are absent
    interval_machine: dict[float, tuple[float, float]] = field(default_factory=dict)
    #: per stage: (interval start, values, values at or above the stage's p99 over the
    #: window) for each measured interval in which the stage has values
    stage_tail_intervals: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)


def _stage(name: str, block: LatencyBlock | None, share: float = 1.0) -> StageFacts | None:
    if block is None or not block.count:
        return None
    return StageFacts(name, float(getattr(block, "share", share) or 0.0),
                      float(block.mean_us or 0.0), block.p50_us, block.p99_us, int(block.count))


def _profile(rd: RunDir) -> ProfileFacts | None:
    raw = rd.profile_status()
    status = None if raw is None else ProfileStatus.from_dict(raw)
    if status is None or not status.ok:
        return None
    stages = rd.read_json("profile/stages.json") or {}
    detail = stages.get("detail") or {}
    waiting: dict[str, float] = {}
    for name, st in ((detail.get("wall") or {}).get("stages") or {}).items():
        if st.get("samples"):
            waiting[name] = float(st.get("waiting") or 0) / float(st["samples"])
    top_self = {name: [(t["function"], int(t["samples"])) for t in st.get("top_self") or []]
                for name, st in ((detail.get("oncpu") or {}).get("stages") or {}).items()}
    functions: dict[str, int] = {}
    path = rd.path / "profile" / "oncpu.collapsed"
    if path.is_file():
        try:
            for stack in parse_collapsed(path.read_text(encoding="utf-8", errors="replace")):
                if stack.leaf is not None:
                    functions[stack.leaf.key] = functions.get(stack.leaf.key, 0) + stack.count
        except ValueError as exc:
            rd.warnings.append(f"profile/oncpu.collapsed is malformed ({exc}); functions ignored")
    return ProfileFacts(status.samples, float(status.rate_hz or 0.0),
                        max(0.0, float(status.window_s)),
                        {k: int(v) for k, v in (stages.get("oncpu") or {}).items()},
                        waiting, top_self, functions, status.lag_warnings)


def _from_summary(s: Summary, meta: dict[str, Any]) -> Facts:
    lb, total = s.load, s.total
    scenario = meta.get("scenario") or {}
    f = Facts(run_id=str(s.run_id), model=s.model or "closed", status=s.status,
              scenario=scenario.get("path"), scenario_sha256=scenario.get("sha256"),
              users=lb.users, target_rps=lb.target_rps, nominal_rps=lb.nominal_rps,
              achieved_rps=lb.achieved_rps, duration_s=s.window.duration_s,
              requests=int(total.count), failures=int(total.failures),
              errors=dict(total.errors or {}), late=lb.late, started=lb.started,
              scheduled=lb.scheduled, dropped=lb.dropped, self_check=list(s.self_check))
    f.client = _stage("client", total.latency.client)
    breakdown = s.stages.get("*")
    if breakdown is not None:
        delay, mean = breakdown.schedule_delay_us, breakdown.client_mean_us
        f.schedule_delay_share = max(0.0, delay / mean) if delay and mean else 0.0
        f.residual = _stage("residual", breakdown.residual)
    return f


def _stages(f: Facts, rd: RunDir, s: Summary, breakdown: Breakdown | None,
            per_name: bool) -> None:
    stage_names = [st.stage for st in breakdown.stages if st.stage] if breakdown else []
    for name in stage_names:
        st = _stage(name, breakdown.stage(name) if breakdown else None)
        if st is None:
            continue
        if breakdown is not None and name == breakdown.service_total:
            f.app = st  # the service's own total, whatever the service calls it
        else:
            f.stages[name] = st
        f.histograms[f"stage:{name}"] = rd.histogram("stage", stage=name)
    names = [r.name for r in s.named if r.count]
    if per_name and len(names) > 1:
        for req in names:
            f.by_name[req] = {"client": rd.histogram("client", name=req)}
            f.by_name[req].update({f"stage:{stage}": rd.histogram("stage", name=req, stage=stage)
                                   for stage in stage_names})


def _resources(f: Facts, rd: RunDir, s: Summary) -> None:
    res = s.resources
    f.cpu_count = int((res.cpu_count if res else None)
                      or (rd.meta.get("environment") or {}).get("cpu_logical") or 1)
    if res is None:
        return
    procs = res.loadgen.processes if res.loadgen else ()
    if procs:
        f.loadgen_saturated_share = max(p.saturated_share for p in procs)
        f.loadgen_cpu_mean_pct = max(p.cpu_mean_pct for p in procs)
    service = res.service
    if service is not None:
        f.service_cpu_mean_pct = service.cpu_mean_pct
        f.workers = [WorkerFacts(w.pid, w.cpu_mean_pct, w.cpu_p95_pct, w.saturated_share)
                     for w in service.workers]
        f.rss_start_bytes = service.rss_start_bytes
        f.rss_growth_bytes = service.rss_growth_bytes
        start, end = s.window.start, s.window.end
        if start is not None and end is not None:
            f.rss_slope_bytes_per_s, f.rss_fit_r2 = trends.rss_trend(rd, start, end)
    f.system_cpu_mean_pct = res.system.cpu_mean_pct if res.system else None
    f.machine_share = {k: float(v) for k, v in (res.machine_share or {}).items()
                       if v is not None}


def _tail(f: Facts, rd: RunDir, start: float | None) -> None:
    if start is None or not f.stages:
        return
    spans: set[tuple[float, float]] = set()
    for name, st in f.stages.items():
        if st.p99_us:
            stage_spans, f.stage_tail_intervals[name] = trends.tail_intervals(
                rd, name, st.p99_us, start)
            spans |= stage_spans
    if spans:
        f.interval_machine = trends.interval_machine(rd, list(spans), f.cpu_count)


def _tag_service_p99(rd: RunDir, tag: str, total: str | None) -> int | None:
    if total in (None, "sum"):
        return None
    hist = rd.histogram("stage", "*", stage=total, tag=tag)
    return stats.percentiles(hist, [99.0])[99.0] if hist.get_total_count() else None


def _total_name(s: Summary) -> str | None:
    overall = s.stages.get("*")
    return overall.service_total if overall is not None else None


def extract_facts(rd: RunDir, per_name: bool = False) -> Facts:
    """Read everything the rules need from a run directory (through its summary).

    ``per_name`` also reads each request name's histograms (``by_name``), which only
    the comparison with a baseline uses (~15 % of the time here on a 3-name run).
    """
    s = summarize_record(rd)
    meta = rd.meta
    f = _from_summary(s, meta)
    if f.client is not None:
        f.histograms["client"] = rd.histogram("client")
    _stages(f, rd, s, s.stages.get("*"), per_name)
    if f.residual is not None:
        f.histograms["residual"] = rd.histogram("residual")
    _resources(f, rd, s)
    f.concurrency = trends.concurrency(meta, len(f.workers))
    total = max(1, f.requests)
    for row in s.tags:
        block = row.latency.client
        f.tags.append(TagFacts(row.tag, row.key, row.value, int(row.count), row.count / total,
                               float(row.fail_pct or 0.0), block.p50_us, block.p99_us,
                               _tag_service_p99(rd, row.tag, _total_name(s))))
    f.profile = _profile(rd)
    _tail(f, rd, s.window.start)
    f.model_versions = trends.model_versions(meta)
    if not f.errors:
        f.errors = {k.partition("|")[2] or k: v
                    for k, v in LoadReport.from_dict(rd.load()).errors.items()}
    return f
