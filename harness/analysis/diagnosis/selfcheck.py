"""The self-check of a run: the rules that say when the harness's own numbers cannot be trusted.

Each rule returns ``{"check", "ok", "severity", "detail"}``; ``severity`` is what a
failure means (``error``: the numbers are not what they claim, the run is degraded;
``warning``: read them with care; ``info``: worth knowing). The detail always
carries the numbers the rule compared. Rules and thresholds are listed in
docs/run-directory.md.
"""

from __future__ import annotations

from typing import Any

from harness import stats
from harness.rundir import RunDir

__all__ = ["LOADGEN_SATURATED_PCT", "self_check"]

LOADGEN_SATURATED_PCT = 90.0  # the driver is one gevent loop: it saturates at one core
LOADGEN_SATURATED_SHARE = 0.10
RATE_SHORTFALL = 0.95
CONTENTION_SYSTEM_PCT = 90.0
LATE_WARNING, DROPPED_ERROR, DELAY_ERROR = 0.01, 0.01, 0.10
PROFILE_ERRORS, PROFILE_LAG_S = 0.01, 1.0
TRANSPORT_ERROR_SHARE = 0.001


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000.0:.3f}"


def _check(name: str, ok: bool, severity: str, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": bool(ok), "severity": "info" if ok else severity, "detail": detail}


def _share(part: float | None, whole: float | None) -> float:
    return part / whole if part and whole else 0.0


def self_check(rd: RunDir, summary: dict[str, Any], load: dict[str, Any]
               ) -> list[dict[str, Any]]:
    """The rules that say when the harness's own numbers cannot be trusted.

    Each rule and its threshold is listed in docs/run-directory.md (summary.json).
    """
    checks = []
    star = summary["requests"][-1]
    res = summary["resources"] or {}
    lb = summary["load"]
    checks.append(_check("measured_data", star["count"] > 0, "error",
                         f"{star['count']} requests in a measured window of "
                         f"{summary['window']['duration_s']} s"))
    # Run completeness: stopped early, driver died, or a much shorter window than planned.
    planned = summary["window"]["planned_duration_s"]
    got = summary["window"]["duration_s"]
    status = rd.meta.get("status")
    problems = []
    if status in ("failed", "incomplete"):
        problems.append(f"run status is {status}")
    if load.get("source") != "load.json":
        problems.append("load.json is missing (the load driver did not finish)")
    elif load.get("stopped_early"):
        problems.append(f"stopped early ({load.get('stop_reason') or 'no reason given'})")
    if planned and got < 0.9 * planned:
        problems.append(f"measured {got:.1f} s of {planned:.1f} s planned")
    checks.append(_check("run_complete", not problems, "error",
                         "; ".join(problems) or f"measured {got:.1f} s as planned"))
    # Load generator saturation: one gevent loop per driver process tops out at one core.
    procs = (res.get("loadgen") or {}).get("processes") or []
    if procs:
        worst = max(procs, key=lambda p: p["saturated_share"])
        checks.append(_check(
            "loadgen_cpu", worst["saturated_share"] <= LOADGEN_SATURATED_SHARE, "error",
            f"load generator pid {worst['pid']} ({worst['role']}) above "
            f"{LOADGEN_SATURATED_PCT:.0f} % of a core in {100 * worst['saturated_share']:.1f} % "
            f"of samples (mean {worst['cpu_mean_pct']:.1f} %, max {worst['cpu_max_pct']:.1f} %); "
            f"limit {100 * LOADGEN_SATURATED_SHARE:.0f} % of samples"))
    else:
        checks.append(_check("loadgen_cpu", False, "warning",
                             "no load generator CPU samples: saturation not checked"))
    if summary["model"] == "open":
        target, achieved = lb.get("target_rps"), lb.get("achieved_rps") or 0.0
        if target:
            checks.append(_check(
                "achieved_rate", achieved >= RATE_SHORTFALL * target, "error",
                f"achieved {achieved:.2f} req/s of {target:.2f} target "
                f"({100 * achieved / target:.1f} %; limit {100 * RATE_SHORTFALL:.0f} %)"))
        late = _share(lb.get("late"), lb.get("started"))
        dropped = _share(lb.get("dropped"), lb.get("scheduled"))
        # Late starts are charged to the service by the corrected latency; that matters
        # when the delay is a visible part of it, not when a few starts slip by 1 ms.
        both = summary["stages"].get("*") or {}
        delay = _share(both.get("schedule_delay_us"), both.get("client_mean_us"))
        severity = "error" if dropped > DROPPED_ERROR or delay > DELAY_ERROR else "warning"
        checks.append(_check(
            "late_dropped", late <= LATE_WARNING and not lb.get("dropped"), severity,
            f"{lb.get('late') or 0} of {lb.get('started') or 0} requests started late "
            f"({100 * late:.2f} %; p99 lateness {_ms(lb.get('lateness_p99_us'))} ms), "
            f"{lb.get('dropped') or 0} of {lb.get('scheduled') or 0} never started "
            f"({100 * dropped:.2f} %); late starts are {100 * delay:.1f} % of the mean "
            "corrected latency"))
    confidence = 100 * summary["confidence"]
    n = star["latency"]["client"]["count"]
    # with no successful request at all, measured_data already says everything
    for p in summary["percentiles"] if n else ():
        key, need = stats.percentile_key(p), summary["min_samples"][stats.percentile_key(p)]
        low = [r.get("name") or r.get("tag") for r in [*summary["requests"][:-1],
                                                       *summary["tags"]]
               if key in r["latency"]["client"]["low_samples"]
               and r["latency"]["client"]["count"]]
        detail = (f"{key} needs >= {need} samples for a {confidence:.0f} % upper bound; "
                  f"all successful requests: {n}")
        if low:
            detail += f"; too few in: {', '.join(low)}"
        checks.append(_check(f"samples_{key}", n >= need and not low, "warning", detail))
    dropped_values = {s["file"]: s.get("out_of_range", 0) for s in rd.series()
                      if s.get("out_of_range")}
    checks.append(_check("out_of_range", not dropped_values, "error",
                         "; ".join(f"{f}: {n} values outside 1 us .. 1 h were dropped"
                                   for f, n in dropped_values.items())
                         or "no value fell outside the histogram range"))
    # the driver counts these over the measured window, like the requests
    requests_all = int((load.get("measured") or {}).get("requests") or star["count"])
    negative = int(load.get("negative_residuals") or 0)
    checks.append(_check(
        "negative_residuals", negative == 0,
        "error" if _share(negative, requests_all) > 0.01 else "warning",
        f"{negative} of {requests_all} requests reported a service time above the client "
        "time" + ("; their residual was recorded as 0: the Server-Timing durations or the "
                  "clocks are wrong" if negative else "")))
    checks.append(_transport_check(load, requests_all))
    if "unanswered" in load:  # load.json from before the count existed has no such key
        checks.append(_unanswered_check(load, requests_all))
    missing = int(load.get("server_timing_missing") or 0)
    malformed = int(load.get("server_timing_malformed") or 0)
    has_stages = any(s.get("metric") == "stage" for s in rd.series())
    detail = f"Server-Timing missing on {missing} and malformed on {malformed} of " \
             f"{requests_all} requests"
    if not has_stages:
        detail += "; no stage was reported: no stage breakdown, only client latency"
    checks.append(_check("server_timing", missing == 0 and malformed == 0 and has_stages,
                         "warning", detail))
    checks.append(_profile_check(rd))
    system = (res.get("system") or {}).get("cpu_mean_pct")
    if system is not None:
        shares = res.get("machine_share") or {}
        svc, gen = shares.get("service") or 0.0, shares.get("loadgen") or 0.0
        other = max(0.0, system / 100.0 - svc - gen)
        checks.append(_check(
            "cpu_contention", system < CONTENTION_SYSTEM_PCT, "warning",
            f"system CPU {system:.1f} % of {res['cpu_count']} cores (limit "
            f"{CONTENTION_SYSTEM_PCT:.0f} %); share of the machine: service {100 * svc:.1f} %, "
            f"load generator {100 * gen:.1f} %, other {100 * other:.1f} %"))
    if rd.warnings:
        checks.append(_check("run_files", False, "warning", "; ".join(rd.warnings)))
    return checks


def _transport_check(load: dict[str, Any], requests_all: int) -> dict[str, Any]:
    """Requests that got no HTTP answer at all (timeouts, resets, closed connections, bytes
    that are not HTTP): the target or the network failed, not the model, and the latency
    percentiles leave those requests out, so beyond a trace they degrade the run."""
    by_type: dict[str, int] = {}
    for key, n in (load.get("errors") or {}).items():
        kind = str(key).rsplit("|", 1)[-1]
        if not kind.startswith("HTTP "):
            by_type[kind] = by_type.get(kind, 0) + int(n)
    total = sum(by_type.values())
    detail = (f"{total} of {requests_all} requests got no HTTP response"
              + (": " + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())) if total
                 else ""))
    severity = "error" if _share(total, requests_all) > TRANSPORT_ERROR_SHARE else "warning"
    return _check("transport_errors", total == 0, severity, detail)


def _unanswered_check(load: dict[str, Any], requests_all: int) -> dict[str, Any]:
    """Requests sent and never answered because the load stopped. Those that had waited
    over a second were slow (the percentiles leave out the slowest requests); the others
    were cut within a second of being sent (a user stopped between tasks, its kill landing
    in its next request): their latency is unknown but they say nothing about the service."""
    total = int(load.get("unanswered") or 0)
    long = int(load.get("unanswered_long") or 0)
    detail = (f"{long} requests had waited over 1 s without an answer when the load "
              "stopped: the latency percentiles leave out the slowest requests"
              if long else "no request was left waiting over 1 s at the stop")
    if total - long:
        detail += (f"; {total - long} more were cut by the stop within 1 s of being sent "
                   "(in no histogram; the service may or may not have received them)")
    # Of all requests sent: the completed ones and the unanswered ones.
    severity = "error" if _share(long, requests_all + total) > TRANSPORT_ERROR_SHARE \
        else "warning"
    return _check("unanswered", long == 0, severity, detail)


def _profile_check(rd: RunDir) -> dict[str, Any]:
    status = rd.profile_status()
    if status is None:
        reason = ((rd.meta.get("collectors") or {}).get("profile") or {}).get("reason")
        return _check("profiler", False, "info",
                      f"no profile: {reason}" if reason else "no profile was recorded")
    if not status.get("ok", False):
        return _check("profiler", False, "warning",
                      f"profiler failed: {status.get('reason') or 'no reason given'}")
    samples, errors = int(status.get("samples") or 0), int(status.get("errors") or 0)
    lag = float(status.get("max_lag_s") or status.get("lag_s") or 0.0)
    behind = int(status.get("lag_warnings") or 0)
    detail = f"{samples} samples at {status.get('rate_hz', '?')} Hz, {errors} errors"
    if behind or lag:
        detail += f", fell behind {behind} times (max {lag:.2f} s)"
    window = status.get("window") or {}
    cpu_s, span = status.get("cpu_s"), (window.get("end") or 0) - (window.get("start") or 0)
    if cpu_s is not None and span > 0:
        detail += f"; py-spy used {cpu_s:.2f} CPU-s ({100 * cpu_s / span:.1f} % of a core)"
    missed = int(status.get("missed_processes") or 0)
    if missed:
        detail += (f"; {missed} process{'es' if missed > 1 else ''} not profiled (ended, or "
                   "the window did, before py-spy attached)")
    if status.get("target_exited"):
        detail += "; the service exited while sampled: the profile is partial"
    elif status.get("failed_processes"):
        detail += f"; {status.get('note') or 'some processes have no profile'}"
    # a few sampling errors are normal (a frame read mid-update); many mean a bad profile
    ok = errors <= PROFILE_ERRORS * max(samples, 1) and lag <= PROFILE_LAG_S \
        and not status.get("target_exited") and not status.get("failed_processes")
    return _check("profiler", ok, "warning", detail)
