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
from harness.analysis.diagnosis.evidence import Evidence, read_evidence
from harness.analysis.diagnosis.profiled import ProfileFacts, read_profile
from harness.analysis.rules import LAYERS, SEVERITIES, Finding
from harness.analysis.rules.thresholds import IDLE_PROCESS_PCT
from harness.analysis.summary import summarize_record
from harness.rundir import RunDir
from harness.rundir.records import (
    Breakdown,
    CheckEntry,
    HostResources,
    LatencyBlock,
    LoadReport,
    Summary,
)

__all__ = ["LAYERS", "SEVERITIES", "Evidence", "Facts", "Finding", "ProcessFacts",
           "active_workers",
           "ProfileFacts", "StageFacts", "TagFacts", "WorkerFacts", "extract_facts",
           "stage_layer"]

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
    p999_us: int | None = None


@dataclass(frozen=True)
class WorkerFacts:
    """CPU of one service worker process (% of one core) over the measured window."""

    pid: int
    cpu_mean_pct: float
    cpu_p95_pct: float
    saturated_share: float


@dataclass(frozen=True)
class ProcessFacts:
    """One process of the service (psutil over the window) and what it is."""

    pid: int
    role: str
    cpu_mean_pct: float
    cpu_max_pct: float = 0.0
    #: its command line, when the profile collector saw it
    command: str = ""
    #: a helper of the service's tree that serves no requests (resource tracker...)
    helper: bool = False
    #: "psutil", or for a remote target the process_* of its /metrics (pid 0: unknown)
    source: str = "psutil"


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
    #: the target is on another host: the service's CPU and memory (when known) come from
    #: its /metrics process_* (``service_cpu_source`` says so), its host's from node_exporter
    remote: bool = False
    service_cpu_source: str = "psutil"
    host: HostResources | None = None
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
    #: the same for the client's own histograms (values >= the client p99)
    client_tail_intervals: list[tuple[float, int, int]] = field(default_factory=list)
    #: "request:NAME" / "tag:KEY=VALUE" -> (requests, requests at or above the client p99)
    tail_by_class: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: every process of the service's tree (psutil), helpers included
    processes: list[ProcessFacts] = field(default_factory=list)
    #: what the run has to localize time with (Server-Timing, traces, profile, psutil);
    #: None (facts built by hand): derived from the fields that are set (``sources``)
    evidence_read: Evidence | None = None

    @property
    def evidence(self) -> Evidence:
        """The run's evidence as read from its directory, else as the fields show it."""
        if self.evidence_read is not None:
            return self.evidence_read
        kinds = {"client"}
        if self.stages or self.app is not None:
            kinds.add("server_timing")
        if self.processes or self.service_cpu_mean_pct is not None:
            kinds.add("resources" if self.service_cpu_source == "psutil" else "target_metrics")
        if self.host is not None:
            kinds.add("node_metrics")
        if self.profile is not None:
            kinds |= {"profile_wall" if v == "wall" else "profile" for v in self.profile.views}
        return Evidence(frozenset(kinds), self.profile.stage_map if self.profile else None,
                        self.host.url if self.host is not None else None)


def active_workers(f: Facts) -> list[WorkerFacts]:
    """The workers that serve requests: a process of the tree that used (almost) no CPU
    under load (multiprocessing's resource tracker, a forkserver) or whose command is such
    a helper is no worker: it is neither balanced nor counted as a request slot."""
    known = {p.pid: p for p in f.processes}
    return [w for w in f.workers if w.cpu_mean_pct >= IDLE_PROCESS_PCT
            and not (w.pid in known and known[w.pid].helper)]


def _stage(name: str, block: LatencyBlock | None, share: float = 1.0) -> StageFacts | None:
    if block is None or not block.count:
        return None
    return StageFacts(name, float(getattr(block, "share", share) or 0.0),
                      float(block.mean_us or 0.0), block.p50_us, block.p99_us, int(block.count),
                      block.p999_us)


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


def total_stage(breakdown: Breakdown | None, series: list[dict[str, Any]]) -> str | None:
    """The stage that is the service's own total: the summary's ``service_total`` when it
    names a stage, else ``app`` (Server-Timing), else a series marked ``total`` (the
    trace-derived ``server`` span)."""
    names = {st.stage for st in breakdown.stages if st.stage} if breakdown else set()
    named = breakdown.service_total if breakdown else None
    if named in names:
        return named
    if "app" in names:
        return "app"
    return next((str(e["stage"]) for e in series if e.get("metric") == "stage"
                 and e.get("total") and e.get("stage") in names), None)


def _stages(f: Facts, rd: RunDir, s: Summary, breakdown: Breakdown | None,
            per_name: bool) -> str | None:
    """Fill the stages, the service total (``f.app``, whatever its name; its histograms are
    keyed ``stage:app``) and, with ``per_name``, each request name's histograms."""
    stage_names = [st.stage for st in breakdown.stages if st.stage] if breakdown else []
    total = total_stage(breakdown, rd.series())
    for name in stage_names:
        st = _stage(name, breakdown.stage(name) if breakdown else None)
        if st is None:
            continue
        if name == total:
            f.app = st
        else:
            f.stages[name] = st
        f.histograms["stage:app" if name == total else f"stage:{name}"] = rd.histogram(
            "stage", stage=name)
    names = [r.name for r in s.named if r.count]
    if per_name and len(names) > 1:
        for req in names:
            f.by_name[req] = {"client": rd.histogram("client", name=req)}
            f.by_name[req].update({"stage:app" if stage == total else f"stage:{stage}":
                                   rd.histogram("stage", name=req, stage=stage)
                                   for stage in stage_names})
    return total


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
    start, end = s.window.start, s.window.end
    if start is not None and end is not None:
        commands = trends.process_commands(rd)
        f.processes = [ProcessFacts(pid, role, mean, top, commands.get(pid, ""),
                                    bool(trends.HELPER_COMMAND.search(commands.get(pid, ""))))
                       for pid, role, mean, top in trends.service_processes(rd, start, end)]
    service = res.service
    if service is not None:
        f.service_cpu_mean_pct = service.cpu_mean_pct
        f.workers = [WorkerFacts(w.pid, w.cpu_mean_pct, w.cpu_p95_pct, w.saturated_share)
                     for w in service.workers]
        f.rss_start_bytes = service.rss_start_bytes
        f.rss_growth_bytes = service.rss_growth_bytes
        if start is not None and end is not None:
            f.rss_slope_bytes_per_s, f.rss_fit_r2 = trends.rss_trend(rd, start, end)
    f.system_cpu_mean_pct = res.system.cpu_mean_pct if res.system else None
    f.machine_share = {k: float(v) for k, v in (res.machine_share or {}).items()
                       if v is not None}
    f.host = res.host
    tp = res.target_process
    if service is None and tp is not None and tp.cpu_mean_pct is not None:
        # psutil saw no service process: the target's own process_* stand in (one process
        # answered, or an exporter's sum; several in turn give no total: left unknown)
        f.service_cpu_mean_pct, f.service_cpu_source = tp.cpu_mean_pct, tp.source
        f.rss_start_bytes, f.rss_growth_bytes = tp.rss_start_bytes, tp.rss_growth_bytes
        if start is not None and end is not None:
            f.rss_slope_bytes_per_s, f.rss_fit_r2 = trends.rss_trend(rd, start, end, remote=True)
        if tp.processes == 1:  # one process: the saturation rules can judge it
            f.processes = [ProcessFacts(0, "service_master", tp.cpu_mean_pct,
                                        tp.cpu_max_pct or 0.0, source=tp.source)]


def _tail(f: Facts, rd: RunDir, s: Summary) -> None:
    start = s.window.start
    if start is None:
        return
    spans: set[tuple[float, float]] = set()
    if f.client is not None and f.client.p99_us:
        spans, f.client_tail_intervals = trends.tail_intervals(rd, None, f.client.p99_us,
                                                               start, metric="client")
        classes: dict[str, tuple[str, str | None]] = {
            f"request:{r.name}": (r.name, None) for r in s.named if r.count}
        classes.update({f"tag:{t.tag}": ("*", t.tag) for t in s.tags if t.count})
        f.tail_by_class = trends.tail_by_class(rd, classes if len(classes) > 1 else {},
                                               f.client.p99_us)
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


def extract_facts(rd: RunDir, per_name: bool = False) -> Facts:
    """Read everything the rules need from a run directory (through its summary).

    ``per_name`` also reads each request name's histograms (``by_name``), which only
    the comparison with a baseline uses (~15 % of the time here on a 3-name run).
    """
    s = summarize_record(rd)
    meta = rd.meta
    f = _from_summary(s, meta)
    f.remote = bool((meta.get("target") or {}).get("remote")) or (
        not (meta.get("target") or {}).get("served_by_harness")
        and (meta.get("target") or {}).get("local_pid") is None and bool(meta.get("target")))
    if f.client is not None:
        f.histograms["client"] = rd.histogram("client")
    total_stage_name = _stages(f, rd, s, s.stages.get("*"), per_name)
    if f.residual is not None:
        f.histograms["residual"] = rd.histogram("residual")
    _resources(f, rd, s)
    f.profile = read_profile(rd)
    # an async worker serves many requests at once: its slots are not workers x threads
    f.concurrency = None if f.profile is not None and f.profile.loops \
        else trends.concurrency(meta, len(active_workers(f)))
    total = max(1, f.requests)
    for row in s.tags:
        block = row.latency.client
        f.tags.append(TagFacts(row.tag, row.key, row.value, int(row.count), row.count / total,
                               float(row.fail_pct or 0.0), block.p50_us, block.p99_us,
                               _tag_service_p99(rd, row.tag, total_stage_name)))
    _tail(f, rd, s)
    res = s.resources
    f.evidence_read = read_evidence(
        rd.series(), resources=any(p.source == "psutil" for p in f.processes),
        profile_views=f.profile.views if f.profile else (),
        stage_map=f.profile.stage_map if f.profile else None,
        metrics=(rd.path / "metrics" / "end.prom").is_file(),
        target_metrics=f.service_cpu_source != "psutil",
        node_url=res.host.url if res is not None and res.host is not None else None)
    f.model_versions = trends.model_versions(meta)
    if not f.errors:
        f.errors = {k.partition("|")[2] or k: v
                    for k, v in LoadReport.from_dict(rd.load()).errors.items()}
    return f
