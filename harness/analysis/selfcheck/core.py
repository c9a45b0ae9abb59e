"""The self-check of a run: the rules that say when the harness's own numbers cannot be trusted.

Each rule is registered in the ``self_check`` book of the rule engine
(``harness.analysis.rules``) and returns ``CheckEntry`` records, written to summary.json
as ``{"check", "ok", "severity", "detail"}``: ``severity`` is what a failure means
(``error``: the numbers are not what they claim, the run is degraded; ``warning``: read
them with care; ``info``: worth knowing), and the detail carries the numbers the rule
compared. The rules read a ``CheckContext`` (the summary without its self-check, load.json
and the few run files they need), so they are unit-testable without a run directory.
Rules: docs/run-directory.md; thresholds and their reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import stats
from harness.analysis.rules import book, rule
from harness.analysis.rules.thresholds import (
    DROPPED_ERROR,
    LATE_WARNING,
    LOADGEN_SATURATED_PCT,
    LOADGEN_SATURATED_SHARE,
    LOOP_LATE_SHARE,
    NEGATIVE_RESIDUAL_ERROR,
    RATE_SHORTFALL,
    RUN_COMPLETE_SHARE,
    SCHEDULE_DELAY_SHARE,
    TRANSPORT_ERROR_SHARE,
)
from harness.rundir import RunDir
from harness.rundir.records import (
    CheckEntry,
    LoadReport,
    ProfileStatus,
    ScrapeStatus,
    SeriesEntry,
    Summary,
)
from harness.units import fmt_ms

__all__ = ["CheckContext", "self_check"]

BOOK = book("self_check")
check = CheckEntry.judged


@dataclass(frozen=True)
class CheckContext:
    """What the self-check rules read: the summary (before its self-check), load.json,
    run.json's status, the series, the profiler's status and the reader's warnings."""

    summary: Summary
    load: LoadReport
    status: str | None = None
    series: tuple[SeriesEntry, ...] = ()
    profile: ProfileStatus | None = None
    #: run.json's reason for a missing profile (collectors.profile.reason)
    profile_reason: str | None = None
    warnings: tuple[str, ...] = ()
    #: the prometheus collector's status (None: it did not run)
    metrics: ScrapeStatus | None = None
    #: traces/status.json of a run with --traces (the join's counts), else None
    traces: dict[str, Any] | None = None
    #: run.json's target URL and the collectors' errors ("name: error")
    target: str | None = None
    collector_errors: tuple[str, ...] = ()
    #: a remote target's telemetry collectors' statuses by name ("process", "node"):
    #: metrics/<name>_status.json, else run.json's collectors.<name>_metrics
    telemetry: dict[str, dict[str, Any]] | None = None
    #: run.json's histogram interval (s)
    interval_s: float = 1.0

    @classmethod
    def of(cls, rd: RunDir, summary: Summary, load: LoadReport) -> CheckContext:
        series = tuple(SeriesEntry.from_dict(s) for s in rd.series())
        raw = rd.profile_status()
        collectors = rd.meta.get("collectors") or {}
        # the collectors' own files: run.json gets its status only after the summary
        scraped = rd.read_json("metrics/status.json") or collectors.get("prometheus")
        target = rd.meta.get("target")
        errors = tuple(f"{name}: {e}" for name, status in collectors.items()
                       if isinstance(status, dict) and isinstance(status.get("errors"), list)
                       for e in status["errors"] if isinstance(e, str))
        return cls(summary, load, rd.meta.get("status"), series,
                   None if raw is None else ProfileStatus.from_dict(raw),
                   (collectors.get("profile") or {}).get("reason"),
                   tuple(rd.warnings),  # after the reads above: they may add warnings
                   None if not isinstance(scraped, dict) else ScrapeStatus.from_dict(scraped),
                   rd.read_json("traces/status.json"),
                   str(target.get("url")) if isinstance(target, dict) else None, errors,
                   _telemetry(rd, collectors), _interval_s(rd.meta.get("load")))

    @property
    def requests_all(self) -> int:
        """Requests in the measured window, as the driver counted them (else the summary)."""
        return int(self.load.measured.requests or self.summary.total.count)


def _interval_s(load: Any) -> float:
    value = load.get("interval_s") if isinstance(load, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0


def _telemetry(rd: RunDir, collectors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("process", "node"):
        found = rd.read_json(f"metrics/{name}_status.json") or collectors.get(f"{name}_metrics")
        if isinstance(found, dict):
            out[name] = found
    return out


def self_check(rd: RunDir, summary: Summary, load: LoadReport) -> list[CheckEntry]:
    """Every self-check of a run, in the book's order (docs/run-directory.md)."""
    return BOOK.run(CheckContext.of(rd, summary, load))


def _share(part: float | None, whole: float | None) -> float:
    return part / whole if part and whole else 0.0


@rule("self_check", "measured_data", layer="measurement")
def measured_data(c: CheckContext) -> CheckEntry:
    """No request in the measured window (an error: nothing was measured), or none that
    succeeded (a warning: the latency histograms hold successes only, so a run where every
    request failed measured no latency; its error rate is measured, and right: the service
    failed, not the measurement, and ``harness check`` fails an error-rate objective on it)."""
    n, ok = c.summary.total.count, c.summary.total.latency.client.count
    detail = f"{n} requests in a measured window of {c.summary.window.duration_s} s"
    if n and not ok:
        detail += ("; none succeeded: no latency was measured (the errors are counted: "
                   "every request failed)")
    elif ok < n:
        detail += f", {ok} successful"
    return check("measured_data", ok > 0, "error" if n == 0 else "warning", detail)


@rule("self_check", "run_complete", layer="measurement")
def run_complete(c: CheckContext) -> CheckEntry:
    """Stopped early, the driver died, or a much shorter window than planned."""
    planned, got = c.summary.window.planned_duration_s, c.summary.window.duration_s
    problems = []
    if c.status in ("failed", "incomplete"):
        problems.append(f"run status is {c.status}")
    if c.load.source != "load.json":
        problems.append("load.json is missing (the load driver did not finish)")
    elif c.load.stopped_early:
        problems.append(f"stopped early ({c.load.stop_reason or 'no reason given'})")
    if planned and got < RUN_COMPLETE_SHARE * planned:
        problems.append(f"measured {got:.1f} s of {planned:.1f} s planned")
    return check("run_complete", not problems, "error",
                 "; ".join(problems) or f"measured {got:.1f} s as planned")


@rule("self_check", "loadgen_cpu", layer="measurement")
def loadgen_cpu(c: CheckContext) -> CheckEntry:
    """One gevent loop per driver process tops out at one core: its queueing is latency."""
    res = c.summary.resources
    procs = res.loadgen.processes if res is not None and res.loadgen is not None else ()
    if not procs:
        return check("loadgen_cpu", False, "warning",
                     "no load generator CPU samples: saturation not checked")
    worst = max(procs, key=lambda p: p.saturated_share)
    return check(
        "loadgen_cpu", worst.saturated_share <= LOADGEN_SATURATED_SHARE, "error",
        f"load generator pid {worst.pid} ({worst.role}) above "
        f"{LOADGEN_SATURATED_PCT:.0f} % of a core in {100 * worst.saturated_share:.1f} % "
        f"of samples (mean {worst.cpu_mean_pct:.1f} %, max {worst.cpu_max_pct:.1f} %); "
        f"limit {100 * LOADGEN_SATURATED_SHARE:.0f} % of samples")


@rule("self_check", "achieved_rate", layer="measurement")
def achieved_rate(c: CheckContext) -> CheckEntry | None:
    """Open model: the achieved rate fell short of the target."""
    lb = c.summary.load
    target, achieved = lb.target_rps, lb.achieved_rps or 0.0
    if c.summary.model != "open" or not target:
        return None
    return check("achieved_rate", achieved >= RATE_SHORTFALL * target, "error",
                 f"achieved {achieved:.2f} req/s of {target:.2f} target "
                 f"({100 * achieved / target:.1f} %; limit {100 * RATE_SHORTFALL:.0f} %)")


@rule("self_check", "late_dropped", layer="measurement")
def late_dropped(c: CheckContext) -> CheckEntry | None:
    """Open model: requests started late or never started.

    A start that is late because no user was free (the service slower than the pool
    covers) is what coordinated-omission correction is for: the corrected latency is the
    truth, so it is a warning. Requests that never started are load not applied: an error
    above 1 %. Runs from before the cause was recorded judge all lateness together."""
    if c.summary.model != "open":
        return None
    lb = c.summary.load
    late, dropped = _share(lb.late, lb.started), _share(lb.dropped, lb.scheduled)
    both = c.summary.stages.get("*")
    delay = _share(both.schedule_delay_us, both.client_mean_us) if both else 0.0
    split = lb.lateness_loop is not None
    pool_late = (lb.late or 0) - (lb.late_loop or 0) if split else (lb.late or 0)
    severity = "error" if dropped > DROPPED_ERROR or (
        not split and delay > SCHEDULE_DELAY_SHARE) else "warning"
    p99 = lb.lateness.p99_us if lb.lateness else None
    cause = (f"; {pool_late} of them because no user was free (the service was slower than "
             f"the pool of {lb.users} users covers: the corrected latency counts that wait), "
             f"{lb.late_loop or 0} by the load generator's own loop; " if split else ", ")
    return check(
        "late_dropped", late <= LATE_WARNING and not lb.dropped, severity,
        f"{lb.late or 0} of {lb.started or 0} requests started late "
        f"({100 * late:.2f} %; p99 lateness {fmt_ms(p99)} ms){cause}"
        f"{lb.dropped or 0} of {lb.scheduled or 0} never started "
        f"({100 * dropped:.2f} %); late starts are {100 * delay:.1f} % of the mean "
        "corrected latency")


@rule("self_check", "loadgen_late", layer="measurement")
def loadgen_late(c: CheckContext) -> CheckEntry | None:
    """Open model: the lateness the load generator's own loop added (it woke late for a
    start while a user was free): the harness's, not the service's, in the corrected
    latency. An error when it is a visible part of that latency."""
    lb = c.summary.load
    loop = lb.lateness_loop
    if c.summary.model != "open" or loop is None:
        return None
    both = c.summary.stages.get("*")
    share = _share(loop.mean_us, both.client_mean_us) if both else 0.0
    late = _share(lb.late_loop, lb.started)
    severity = "error" if share > LOOP_LATE_SHARE else "warning"
    return check(
        "loadgen_late", share <= LOOP_LATE_SHARE and late <= LATE_WARNING, severity,
        f"the load generator's own loop started {lb.late_loop or 0} of {lb.started or 0} "
        f"requests late ({100 * late:.2f} %; its lateness p50 {fmt_ms(loop.p50_us)} ms, "
        f"p99 {fmt_ms(loop.p99_us)} ms, mean {fmt_ms(loop.mean_us)} ms = "
        f"{100 * share:.1f} % of the mean corrected latency; limit "
        f"{100 * LOOP_LATE_SHARE:.0f} %)")


@rule("self_check", "samples", layer="measurement")
def samples(c: CheckContext) -> list[CheckEntry]:
    """Fewer samples than a bound of the percentile needs, overall or in a row."""
    s = c.summary
    n = s.total.latency.client.count
    rows = [(r.name, r.latency.client) for r in s.named] + [(t.tag, t.latency.client)
                                                            for t in s.tags]
    out = []
    # with no successful request at all, measured_data already says everything
    for p in s.percentiles if n else ():
        key = stats.percentile_key(p)
        need = s.min_samples[key]
        low = [name for name, block in rows if block.is_low(key) and block.count]
        detail = (f"{key} needs >= {need} samples for a {100 * s.confidence:.0f} % upper "
                  f"bound; all successful requests: {n}")
        if low:
            detail += f"; too few in: {', '.join(low)}"
        out.append(check(f"samples_{key}", n >= need and not low, "warning", detail))
    return out


@rule("self_check", "out_of_range", layer="measurement")
def out_of_range(c: CheckContext) -> CheckEntry:
    """Values outside the histograms' range (1 µs .. 1 h) were dropped."""
    dropped = {s.file: s.out_of_range for s in c.series if s.out_of_range}
    return check("out_of_range", not dropped, "error",
                 "; ".join(f"{f}: {n} values outside 1 us .. 1 h were dropped"
                           for f, n in dropped.items())
                 or "no value fell outside the histogram range")


@rule("self_check", "negative_residuals", layer="measurement")
def negative_residuals(c: CheckContext) -> CheckEntry:
    """A service time above the client time: Server-Timing or the clocks are wrong."""
    negative, total = c.load.negative_residuals, c.requests_all
    return check(
        "negative_residuals", negative == 0,
        "error" if _share(negative, total) > NEGATIVE_RESIDUAL_ERROR else "warning",
        f"{negative} of {total} requests reported a service time above the client "
        "time" + ("; their residual was recorded as 0: the Server-Timing durations or the "
                  "clocks are wrong" if negative else ""))


@rule("self_check", "transport_errors", layer="measurement")
def transport_errors(c: CheckContext) -> CheckEntry:
    """Requests that got no HTTP answer at all (timeouts, resets, closed connections, bytes
    that are not HTTP): the target or the network failed, not the model, and the latency
    percentiles leave those requests out, so beyond a trace they degrade the run."""
    by_type = c.load.transport_errors
    total, n = sum(by_type.values()), c.requests_all
    detail = (f"{total} of {n} requests got no HTTP response"
              + (": " + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())) if total
                 else ""))
    severity = "error" if _share(total, n) > TRANSPORT_ERROR_SHARE else "warning"
    return check("transport_errors", total == 0, severity, detail)


@rule("self_check", "unanswered", layer="measurement")
def unanswered(c: CheckContext) -> CheckEntry | None:
    """Requests sent and never answered because the load stopped. Those that had waited
    over a second were slow (the percentiles leave out the slowest requests); the others
    were cut within a second of being sent (a user stopped between tasks, its kill landing
    in its next request): their latency is unknown but they say nothing about the service."""
    if c.load.unanswered is None:  # load.json from before the count existed
        return None
    total, long = c.load.unanswered, int(c.load.unanswered_long or 0)
    detail = (f"{long} requests had waited over 1 s without an answer when the load "
              "stopped: the latency percentiles leave out the slowest requests"
              if long else "no request was left waiting over 1 s at the stop")
    if total - long:
        detail += (f"; {total - long} more were cut by the stop within 1 s of being sent "
                   "(in no histogram; the service may or may not have received them)")
    # Of all requests sent: the completed ones and the unanswered ones.
    severity = "error" if _share(long, c.requests_all + total) > TRANSPORT_ERROR_SHARE \
        else "warning"
    return check("unanswered", long == 0, severity, detail)
