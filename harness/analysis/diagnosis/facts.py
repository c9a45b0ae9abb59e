"""The facts a diagnosis looks at, extracted once from a run directory, and the Finding record.

``extract_facts(run)`` reads the run through ``harness.analysis.summary.summarize`` (so the
numbers are the ones ``harness summary`` shows) plus the few things the summary
does not keep: per-sample memory for a growth slope, the profile's stage samples
and function counts, the model versions served, and the histograms a baseline
comparison needs for its confidence intervals. Every field can also be filled by
hand, which is how the rules are unit-tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from harness import stats
from harness.analysis.summary import LOADGEN_ROLES, SERVICE_ROLES, summarize
from harness.rundir import RunDir
from harness.rundir.stacks import parse_collapsed

__all__ = ["LAYERS", "SEVERITIES", "Facts", "Finding", "ProfileFacts", "StageFacts",
           "TagFacts", "WorkerFacts", "extract_facts", "stage_layer"]

SEVERITIES = ("critical", "warning", "info")
LAYERS = ("measurement", "infrastructure", "upstream", "model", "serialization",
          "input data", "change")

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
class Finding:
    """One ranked observation: what, where (layer), how sure, and what to look at next."""

    severity: str
    layer: str
    title: str
    evidence: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    #: share of the client latency (or of its growth) this finding explains, 0..1
    score: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES} (got {self.severity!r})")
        if self.layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS} (got {self.layer!r})")
        if not self.title:
            raise ValueError(f"title must be a non-empty string (got {self.title!r})")

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "layer": self.layer, "title": self.title,
                "evidence": list(self.evidence), "next_steps": list(self.next_steps),
                "score": round(float(self.score), 4), "data": dict(self.data)}


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
    self_check: list[dict[str, Any]] = field(default_factory=list)
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


def _tag_service_p99(rd: RunDir, tag: str) -> int | None:
    hist = rd.histogram("stage", "*", stage="app", tag=tag)
    return stats.percentiles(hist, [99.0])[99.0] if hist.get_total_count() else None


def _stage(name: str, block: dict[str, Any] | None) -> StageFacts | None:
    if not block or not block.get("count"):
        return None
    return StageFacts(name, float(block.get("share") or 0.0), float(block.get("mean_us") or 0.0),
                      block.get("p50_us"), block.get("p99_us"), int(block["count"]))


def _rss_trend(rd: RunDir, start: float, end: float) -> tuple[float | None, float | None]:
    """Least-squares slope (bytes/s) and r² of the service tree's RSS over the window."""
    per_t: dict[float, int] = {}
    for r in rd.resources():
        if r.role in SERVICE_ROLES and start - 0.5 <= r.t <= end + 0.5:
            per_t[r.t] = per_t.get(r.t, 0) + int(r.rss_bytes)
    if len(per_t) < 8:
        return None, None
    t = np.array(sorted(per_t), dtype=float)
    y = np.array([per_t[k] for k in sorted(per_t)], dtype=float)
    slope, intercept = np.polyfit(t - t[0], y, 1)
    fitted = slope * (t - t[0]) + intercept
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else 0.0
    return float(slope), r2


def _profile(rd: RunDir) -> ProfileFacts | None:
    status = rd.profile_status()
    if not status or not status.get("ok"):
        return None
    stages = rd.read_json("profile/stages.json") or {}
    detail = stages.get("detail") or {}
    window = status.get("window") or {}
    span = (window.get("end") or 0.0) - (window.get("start") or 0.0)
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
    return ProfileFacts(int(status.get("samples") or 0), float(status.get("rate_hz") or 0.0),
                        max(0.0, float(span)), {k: int(v) for k, v in
                                                (stages.get("oncpu") or {}).items()},
                        waiting, top_self, functions, int(status.get("lag_warnings") or 0))


def _model_versions(meta: dict[str, Any]) -> dict[str, str]:
    target = meta.get("target") or {}
    found: dict[str, str] = {}
    for name, info in (target.get("models") or {}).items():
        if isinstance(info, dict) and info.get("default_version"):
            found[str(name)] = str(info["default_version"])
    asked = (target.get("service_options") or {})
    for key in ("versions", "model_versions"):
        for name, version in (asked.get(key) or {}).items():
            found[str(name)] = str(version)
    return found


def _concurrency(meta: dict[str, Any], workers: int) -> int | None:
    opts = (meta.get("target") or {}).get("service_options") or {}
    if isinstance(opts.get("workers"), int) and opts["workers"] > 0:
        threads = opts.get("threads") if opts.get("worker_class") == "gthread" else 1
        return int(opts["workers"]) * int(threads or 1)
    return workers or None


def _interval_machine(rd: RunDir, starts: list[tuple[float, float]], cpus: int
                      ) -> dict[float, tuple[float, float]]:
    """Interval start -> (system CPU %, other processes' share of the machine), from the
    resources samples that fall inside the interval."""
    own_roles = set(SERVICE_ROLES) | set(LOADGEN_ROLES) | {"profiler"}
    by_t: dict[float, list[float]] = {}  # t -> [system %, own % of one core]
    for r in rd.resources():
        slot = by_t.setdefault(r.t, [-1.0, 0.0])
        if r.role == "system":
            slot[0] = r.cpu_percent
        elif r.role in own_roles:
            slot[1] += r.cpu_percent
    samples = sorted((t, s, own) for t, (s, own) in by_t.items() if s >= 0)
    out: dict[float, tuple[float, float]] = {}
    i = 0
    for t0, dt in sorted(starts):
        while i < len(samples) and samples[i][0] < t0:
            i += 1
        j = i
        inside = []
        while j < len(samples) and samples[j][0] < t0 + dt:
            inside.append(samples[j])
            j += 1
        if inside:
            system = sum(s for _, s, _ in inside) / len(inside)
            own = sum(o for _, _, o in inside) / len(inside) / (100.0 * max(1, cpus))
            out[round(t0, 3)] = (system, max(0.0, system / 100.0 - own))
    return out


def _tail_intervals(rd: RunDir, stage: str, p99_us: int, start: float
                    ) -> tuple[set[tuple[float, float]], list[tuple[float, int, int]]]:
    """The window's intervals in which the stage has values, as (start, length), and
    (start, values, values >= p99) for each."""
    spans, counts = set(), []
    for t, dt, hist in rd.interval_histograms("stage", stage=stage):
        if t < start - 1e-6:
            continue  # warm-up
        arr = stats.counts_array(hist)
        idx = hist.get_counts_array_index(int(p99_us))
        spans.add((round(t, 3), dt))
        counts.append((round(t, 3), int(arr.sum()), int(arr[idx:].sum())))
    return spans, counts


def extract_facts(rd: RunDir, per_name: bool = False) -> Facts:
    """Read everything the rules need from a run directory (through its summary).

    ``per_name`` also reads each request name's histograms (``by_name``), which only
    the comparison with a baseline uses (~15 % of the time here on a 3-name run).
    """
    summary = summarize(rd, write=False)
    meta = rd.meta
    star = summary["requests"][-1]
    lb = summary["load"]
    res = summary.get("resources") or {}
    breakdown = summary["stages"].get("*") or {}
    stage_rows = {s["stage"]: s for s in breakdown.get("stages") or []}
    load = rd.load()
    f = Facts(run_id=str(summary["run_id"]), model=summary.get("model") or "closed",
              status=summary.get("status"),
              scenario=(meta.get("scenario") or {}).get("path"),
              scenario_sha256=(meta.get("scenario") or {}).get("sha256"),
              users=lb.get("users"), target_rps=lb.get("target_rps"),
              nominal_rps=lb.get("nominal_rps", lb.get("target_rps")),
              achieved_rps=lb.get("achieved_rps"), duration_s=summary["window"]["duration_s"],
              requests=int(star["count"]), failures=int(star["failures"]),
              errors=dict(star.get("errors") or {}), late=lb.get("late"),
              started=lb.get("started"), scheduled=lb.get("scheduled"), dropped=lb.get("dropped"),
              self_check=list(summary.get("self_check") or []))
    client = star["latency"]["client"]
    if client["count"]:
        f.client = StageFacts("client", 1.0, float(client["mean_us"]), client["p50_us"],
                              client["p99_us"], int(client["count"]))
        f.histograms["client"] = rd.histogram("client")
    delay, mean = breakdown.get("schedule_delay_us"), breakdown.get("client_mean_us")
    f.schedule_delay_share = max(0.0, delay / mean) if delay and mean else 0.0
    for name, row in stage_rows.items():
        st = _stage(name, row)
        if st is None:
            continue
        if name == "app":
            f.app = st
        else:
            f.stages[name] = st
        f.histograms[f"stage:{name}"] = rd.histogram("stage", stage=name)
    names = [r["name"] for r in summary["requests"] if r["name"] != "*" and r["count"]]
    if per_name and len(names) > 1:
        for req in names:
            f.by_name[req] = {"client": rd.histogram("client", name=req)}
            f.by_name[req].update({f"stage:{stage}": rd.histogram("stage", name=req, stage=stage)
                                   for stage in stage_rows})
    f.residual = _stage("residual", breakdown.get("residual"))
    if f.residual is not None:
        f.histograms["residual"] = rd.histogram("residual")
    f.cpu_count = int(res.get("cpu_count") or (meta.get("environment") or {}).get(
        "cpu_logical") or 1)
    procs = (res.get("loadgen") or {}).get("processes") or []
    if procs:
        f.loadgen_saturated_share = max(p["saturated_share"] for p in procs)
        f.loadgen_cpu_mean_pct = max(p["cpu_mean_pct"] for p in procs)
    service = res.get("service") or {}
    if service:
        f.service_cpu_mean_pct = service.get("cpu_mean_pct")
        f.workers = [WorkerFacts(w["pid"], w["cpu_mean_pct"], w["cpu_p95_pct"],
                                 w["saturated_share"]) for w in service.get("workers") or []]
        f.rss_start_bytes = service.get("rss_start_bytes")
        f.rss_growth_bytes = service.get("rss_growth_bytes")
        start, end = summary["window"]["start"], summary["window"]["end"]
        if start is not None and end is not None:
            f.rss_slope_bytes_per_s, f.rss_fit_r2 = _rss_trend(rd, start, end)
    f.concurrency = _concurrency(meta, len(f.workers))
    f.system_cpu_mean_pct = (res.get("system") or {}).get("cpu_mean_pct")
    f.machine_share = {k: float(v) for k, v in (res.get("machine_share") or {}).items()
                       if v is not None}
    total = max(1, f.requests)
    for row in summary.get("tags") or []:
        block = row["latency"]["client"]
        f.tags.append(TagFacts(row["tag"], row["key"], row["value"], int(row["count"]),
                               row["count"] / total, float(row.get("fail_pct") or 0.0),
                               block.get("p50_us"), block.get("p99_us"),
                               _tag_service_p99(rd, row["tag"])))
    f.profile = _profile(rd)
    start = summary["window"]["start"]
    if start is not None and f.stages:
        spans: set[tuple[float, float]] = set()
        for name, st in f.stages.items():
            if st.p99_us:
                stage_spans, f.stage_tail_intervals[name] = _tail_intervals(
                    rd, name, st.p99_us, start)
                spans |= stage_spans
        if spans:
            f.interval_machine = _interval_machine(rd, list(spans), f.cpu_count)
    f.model_versions = _model_versions(meta)
    if not f.errors:
        f.errors = {str(k).partition("|")[2] or str(k): int(v)
                    for k, v in (load.get("errors") or {}).items()}
    return f
