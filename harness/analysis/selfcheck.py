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

from harness import stats
from harness.analysis.rules import book, rule
from harness.analysis.rules.thresholds import (
    CONTENTION_SYSTEM_PCT,
    DROPPED_ERROR,
    LATE_WARNING,
    LOADGEN_SATURATED_PCT,
    LOADGEN_SATURATED_SHARE,
    NEGATIVE_RESIDUAL_ERROR,
    PROFILE_ERRORS,
    PROFILE_LAG_S,
    RATE_SHORTFALL,
    RUN_COMPLETE_SHARE,
    SCHEDULE_DELAY_SHARE,
    TRANSPORT_ERROR_SHARE,
)
from harness.rundir import RunDir
from harness.rundir.records import CheckEntry, LoadReport, ProfileStatus, SeriesEntry, Summary
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
    #: run.json's target URL and the collectors' errors ("name: error")
    target: str | None = None
    collector_errors: tuple[str, ...] = ()

    @classmethod
    def of(cls, rd: RunDir, summary: Summary, load: LoadReport) -> CheckContext:
        series = tuple(SeriesEntry.from_dict(s) for s in rd.series())
        raw = rd.profile_status()
        collectors = rd.meta.get("collectors") or {}
        target = rd.meta.get("target")
        errors = tuple(f"{name}: {e}" for name, status in collectors.items()
                       if isinstance(status, dict) and isinstance(status.get("errors"), list)
                       for e in status["errors"] if isinstance(e, str))
        return cls(summary, load, rd.meta.get("status"), series,
                   None if raw is None else ProfileStatus.from_dict(raw),
                   (collectors.get("profile") or {}).get("reason"),
                   tuple(rd.warnings),  # after the files above: reading them may add some
                   str(target.get("url")) if isinstance(target, dict) else None, errors)

    @property
    def requests_all(self) -> int:
        """Requests in the measured window, as the driver counted them (else the summary)."""
        return int(self.load.measured.requests or self.summary.total.count)


def self_check(rd: RunDir, summary: Summary, load: LoadReport) -> list[CheckEntry]:
    """Every self-check of a run, in the book's order (docs/run-directory.md)."""
    return BOOK.run(CheckContext.of(rd, summary, load))


def _share(part: float | None, whole: float | None) -> float:
    return part / whole if part and whole else 0.0


@rule("self_check", "measured_data", layer="measurement")
def measured_data(c: CheckContext) -> CheckEntry:
    """No request in the measured window, or none that succeeded: the latency histograms
    hold successes only, so a run where every request failed (every one an HTTP 500)
    measured no latency at all, however many requests it sent."""
    n, ok = c.summary.total.count, c.summary.total.latency.client.count
    detail = f"{n} requests in a measured window of {c.summary.window.duration_s} s"
    if n and not ok:
        detail += "; none succeeded: no latency was measured"
    elif ok < n:
        detail += f", {ok} successful"
    return check("measured_data", ok > 0, "error", detail)


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
    """Open model: requests started late or never started."""
    if c.summary.model != "open":
        return None
    lb = c.summary.load
    late, dropped = _share(lb.late, lb.started), _share(lb.dropped, lb.scheduled)
    # Late starts are charged to the service by the corrected latency; that matters
    # when the delay is a visible part of it, not when a few starts slip by 1 ms.
    both = c.summary.stages.get("*")
    delay = _share(both.schedule_delay_us, both.client_mean_us) if both else 0.0
    severity = "error" if dropped > DROPPED_ERROR or delay > SCHEDULE_DELAY_SHARE else "warning"
    p99 = lb.lateness.p99_us if lb.lateness else None
    return check(
        "late_dropped", late <= LATE_WARNING and not lb.dropped, severity,
        f"{lb.late or 0} of {lb.started or 0} requests started late "
        f"({100 * late:.2f} %; p99 lateness {fmt_ms(p99)} ms), "
        f"{lb.dropped or 0} of {lb.scheduled or 0} never started "
        f"({100 * dropped:.2f} %); late starts are {100 * delay:.1f} % of the mean "
        "corrected latency")


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


@rule("self_check", "server_timing", layer="measurement")
def server_timing(c: CheckContext) -> CheckEntry:
    """Server-Timing missing or malformed on a request, or no stage reported at all."""
    missing, malformed = c.load.server_timing_missing, c.load.server_timing_malformed
    has_stages = any(s.metric == "stage" for s in c.series)
    detail = f"Server-Timing missing on {missing} and malformed on {malformed} of " \
             f"{c.requests_all} requests"
    if not has_stages:
        detail += "; no stage was reported: no stage breakdown, only client latency"
    return check("server_timing", missing == 0 and malformed == 0 and has_stages, "warning",
                 detail)


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
        detail += (f"; py-spy used {status.cpu_s:.2f} CPU-s ({100 * status.cpu_s / span:.1f} % "
                   "of a core)")
    missed = status.missed_processes
    if missed:
        detail += (f"; {missed} process{'es' if missed > 1 else ''} not profiled (ended, or "
                   "the window did, before py-spy attached)")
    if status.target_exited:
        detail += "; the service exited while sampled: the profile is partial"
    elif status.failed_processes:
        detail += f"; {status.note or 'some processes have no profile'}"
    # a few sampling errors are normal (a frame read mid-update); many mean a bad profile
    ok = status.errors <= PROFILE_ERRORS * max(status.samples, 1) and lag <= PROFILE_LAG_S \
        and not status.target_exited and not status.failed_processes
    return check("profiler", ok, "warning", detail)


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

