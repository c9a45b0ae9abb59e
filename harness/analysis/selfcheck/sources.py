"""Self-checks of where a run's numbers came from (Server-Timing, traces, the profiler, the
/metrics scrapes, the run's files) and of the machine they came from (the rest of the
self-check: ``core``)."""

from __future__ import annotations

from typing import Any

from harness.analysis.rules import rule
from harness.analysis.rules.thresholds import (
    CONTENTION_SYSTEM_PCT,
    PROFILE_ERRORS,
    PROFILE_ERRORS_NONBLOCKING,
    PROFILE_LAG_S,
    PROFILE_PAUSED_SHARE,
    TRACES_JOINED_SHARE,
)
from harness.analysis.selfcheck.core import CheckContext, check
from harness.rundir.records import (
    CheckEntry,
    ProfilerCost,
)


@rule("self_check", "server_timing", layer="measurement")
def server_timing(c: CheckContext) -> CheckEntry:
    """Server-Timing missing or malformed on a request, or no stage reported at all."""
    missing, malformed = c.load.server_timing_missing, c.load.server_timing_malformed
    has_stages = any(s.metric == "stage" for s in c.series)
    detail = f"Server-Timing missing on {missing} and malformed on {malformed} of " \
             f"{c.requests_all} requests"
    if not has_stages:
        detail += ("; no stage was reported: no stage breakdown, only client latency (to add "
                   "one: Server-Timing from the service, or --traces for its OpenTelemetry "
                   "spans)")
    traced = c.traces is not None and has_stages and malformed == 0
    if traced:
        detail += "; the stages come from the service's traces (--traces)"
    return check("server_timing", traced or (missing == 0 and malformed == 0 and has_stages),
                 "warning", detail)


@rule("self_check", "traces", layer="measurement")
def traces(c: CheckContext) -> CheckEntry | None:
    """With --traces: how many requests carry trace stages; a warning when more than 1 %
    of the traced requests could not be joined to a server span (stages from the rest
    describe a sample, not every request)."""
    t = c.traces
    if t is None:
        return None
    join: dict[str, Any] = t["join"] if isinstance(t.get("join"), dict) else {}
    records = int(t.get("request_records") or 0)
    joined = int(join.get("joined") or 0)
    share = joined / records if records else 0.0
    detail = (f"{joined} of {records} traced requests joined to a server span "
              f"({100 * share:.1f} %); {join.get('without_trace', 0)} without any span, "
              f"{join.get('without_server_span', 0)} without a span under the client's; "
              f"{t.get('traces_without_request', 0)} traces without a request")
    if t.get("reason"):
        detail += f"; {t['reason']}"
    return check("traces", records > 0 and share >= TRACES_JOINED_SHARE, "warning", detail)


@rule("self_check", "profiler", layer="measurement")
def profiler(c: CheckContext) -> CheckEntry:
    """No profile, a failed profiler, sampling errors, lag, or a partial profile."""
    status = c.profile
    if status is None:
        reason = c.profile_reason
        return check("profiler", False, "info",
                     f"no profile: {reason}" if reason else "no profile was recorded")
    if not status.ok:
        return check("profiler", False, "warning",
                     f"profiler failed: {status.reason or 'no reason given'}")
    rate = "?" if status.rate_hz is None else status.rate_hz
    detail = f"{status.samples} samples at {rate} Hz, {status.errors} errors"
    lag, behind = status.max_lag_s, status.lag_warnings
    if behind or lag:
        detail += f", fell behind {behind} times (max {lag:.2f} s)"
    span = status.window_s
    if status.cpu_s is not None and span > 0:
        detail += f"; {_cost(status.cpu_s, span, status.cost, status.nonblocking)}"
    paused = status.cost.paused_share if status.cost is not None else None
    missed = status.missed_processes
    if missed:
        detail += (f"; {missed} process{'es' if missed > 1 else ''} not profiled (ended, or "
                   "the window did, before py-spy attached)")
    if status.target_exited:
        detail += "; the service exited while sampled: the profile is partial"
    elif status.failed_processes:
        detail += f"; {status.note or 'some processes have no profile'}"
    # a few sampling errors are normal (a frame read mid-update); many mean a bad profile
    errors = PROFILE_ERRORS_NONBLOCKING if status.nonblocking else PROFILE_ERRORS
    ok = status.errors <= errors * max(status.samples, 1) and lag <= PROFILE_LAG_S \
        and not status.target_exited and not status.failed_processes \
        and (paused or 0.0) <= PROFILE_PAUSED_SHARE
    return check("profiler", ok, "warning", detail)


def _cost(cpu_s: float, span: float, cost: ProfilerCost | None, nonblocking: bool | None) -> str:
    mode = "" if nonblocking is None else " (non-blocking)" if nonblocking else " (blocking)"
    text = f"py-spy{mode} used {cpu_s:.2f} CPU-s ({100 * cpu_s / span:.1f} % of a core"
    if cost is not None and cost.service_cpu_share is not None:
        text += f", {100 * cost.service_cpu_share:.1f} % of the service's CPU"
    text += ")"
    if cost is not None and cost.paused_share is not None:
        text += (f"; it held a sampled process stopped up to {100 * cost.paused_share:.1f} % "
                 f"of the window (upper bound; limit {100 * PROFILE_PAUSED_SHARE:.0f} %)")
    return text


@rule("self_check", "profile_cpu", layer="measurement")
def profile_cpu(c: CheckContext) -> CheckEntry | None:
    """py-spy's on-CPU samples against the CPU the kernel measured for the same processes:
    more samples than CPU and run-queue time means waiting threads counted as running (a
    warning); more than CPU alone, time waiting for a CPU counted (information on a busy
    machine, a warning in py-spy's blocking mode, whose stops make the threads runnable)."""
    found = c.profile.oncpu_check if c.profile is not None and c.profile.ok else None
    if found is None or found.verdict == "unknown":
        return None
    severity = "info" if found.verdict == "runnable_counted" and not found.blocking \
        else "warning"
    return check("profile_cpu", found.verdict == "ok", severity, found.detail or found.verdict)


@rule("self_check", "cpu_contention", layer="measurement")
def cpu_contention(c: CheckContext) -> CheckEntry | None:
    """The machine had no spare CPU: the shares of service, load generator and the rest."""
    res = c.summary.resources
    if res is None or res.system is None:
        return None
    system = res.system.cpu_mean_pct
    svc, gen = res.share("service"), res.share("loadgen")
    other = max(0.0, system / 100.0 - svc - gen)
    return check(
        "cpu_contention", system < CONTENTION_SYSTEM_PCT, "warning",
        f"system CPU {system:.1f} % of {res.cpu_count} cores (limit "
        f"{CONTENTION_SYSTEM_PCT:.0f} %); share of the machine: service {100 * svc:.1f} %, "
        f"load generator {100 * gen:.1f} %, other {100 * other:.1f} %")


@rule("self_check", "metrics", layer="measurement")
def metrics(c: CheckContext) -> CheckEntry | None:
    """The target's Prometheus metrics were not scraped (info: no number of the run depends
    on them, only the metrics comparison of the report and the diagnosis)."""
    m = c.metrics
    if m is None:
        return None
    if m.ok:
        return check("metrics", True, "info", f"scraped {m.scrapes} times at {m.url}")
    cause = m.failure or m.reason or "no reason given"
    return check("metrics", False, "info",
                 f"not scraped ({cause}); a service that serves them elsewhere: "
                 "--metrics-url URL")


def _scrapes(status: dict[str, Any]) -> str:
    failed = int(status.get("failed_scrapes") or 0)
    text = f"{status.get('rows', 0)} rows from {status.get('scrapes', 0)} scrapes"
    if failed:
        errors = status.get("errors") or []
        text += f"; {failed} scrapes failed" + (f" (first: {errors[0]})" if errors else "")
    return text


@rule("self_check", "target_resources", layer="measurement")
def target_resources(c: CheckContext) -> CheckEntry | None:
    """Where a remote target's CPU and memory came from: its /metrics process_* (which
    process answered); failed scrapes warn (rows between them are kept; the rates skip the
    gap). None at all (no /metrics, or a multiprocess prometheus_client that exports no
    process_*) is information, as the ``metrics`` check's: no number of the run depends on
    them, and the diagnosis's evidence line names what is missing."""
    status = (c.telemetry or {}).get("process")
    if status is None or status.get("skipped"):
        return None
    url = status.get("url")
    if not status.get("rows"):
        return check("target_resources", False, "info",
                     f"the target is not local and its CPU and memory were not measured: "
                     f"{status.get('reason') or status.get('what')} ({url}; "
                     f"{_scrapes(status)})")
    return check("target_resources", not status.get("failed_scrapes"), "warning",
                 f"the target's CPU and memory from process_cpu_seconds_total and "
                 f"process_resident_memory_bytes of {url} (remote target): "
                 f"{status.get('what')}; {_scrapes(status)}")


@rule("self_check", "node_metrics", layer="measurement")
def node_metrics(c: CheckContext) -> CheckEntry | None:
    """The service host's node_exporter (--node-metrics): scraped, or why not."""
    status = (c.telemetry or {}).get("node")
    if status is None:
        return None
    ok = bool(status.get("ok")) and not status.get("failed_scrapes")
    detail = f"host CPU and memory from node_exporter at {status.get('url')}: " \
             f"{_scrapes(status)}"
    if not status.get("ok"):
        detail += f"; no host figures: {status.get('reason')}"
    return check("node_metrics", ok, "warning", detail)


@rule("self_check", "run_files", layer="measurement")
def run_files(c: CheckContext) -> CheckEntry | None:
    """The reader met truncated or malformed files."""
    return check("run_files", False, "warning", "; ".join(c.warnings)) if c.warnings else None


@rule("self_check", "target_bounds", layer="measurement")
def target_bounds(c: CheckContext) -> CheckEntry | None:
    """The target passed a bound the harness keeps on what a target controls (series per
    run from the stage names it sends, the size and time of a /metrics scrape): what passed
    it was counted, not kept. Server-Timing headers over their bounds (entries, name
    length, values) count as malformed in ``server_timing``."""
    bounds = c.load.bounds if isinstance(c.load.bounds, dict) else {}
    passed = [e for e in c.collector_errors if "exceeded a bound" in e]
    if not bounds and not passed:
        return None  # a run from before the bounds were recorded
    limit, over = bounds.get("series_limit"), bounds.get("values_over_series_limit")
    over = over if isinstance(over, int) and not isinstance(over, bool) else 0
    cut = ([f"{over} values of series beyond {limit} series per run (names the target "
            "sent) were counted, not recorded"] if over else []) + passed
    where = f"the target {c.target}" if c.target else "the target"
    detail = (f"{where} exceeded a bound: " + "; ".join(cut) if cut else
              f"{where} stayed within the bounds ({bounds.get('series', '?')} of {limit} "
              "series per run)")
    return check("target_bounds", not cut, "warning", detail)
