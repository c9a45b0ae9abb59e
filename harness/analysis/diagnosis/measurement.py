"""Diagnosis rules of the measurement layer: can the run's numbers be trusted?

The load generator's CPU, the rate it achieved, late starts, the sample count, failed
self-checks and a machine crowded by other processes. Registered in the ``single`` book;
thresholds and their reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness import stats
from harness.analysis.diagnosis.evidence import HOW_TO_ADD, missing_kinds
from harness.analysis.diagnosis.facts import Facts
from harness.analysis.diagnosis.measures import service_saturated
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    LOADGEN_SATURATED_PCT,
    LOADGEN_SATURATED_SHARE,
    MACHINE_OTHER_SHARE,
    MACHINE_SYSTEM_PCT,
    RATE_SHORTFALL,
    SCHEDULE_DELAY_SHARE,
)
from harness.units import fmt_ms_unit, fmt_pct

__all__ = ["machine_evidence", "rate_short"]

#: self-checks whose failure puts every number of the run in doubt
_SELF_CHECKS = ("run_complete", "out_of_range", "negative_residuals", "measured_data")


@rule("single", "loadgen_saturated", layer="measurement")
def loadgen_saturated(f: Facts) -> Finding | None:
    """The load generator was CPU-saturated: latency includes its own queueing."""
    saturated = f.loadgen_saturated_share
    if saturated is None or saturated <= LOADGEN_SATURATED_SHARE:
        return None
    return Finding(
        "critical", "measurement", "the load generator is CPU-saturated: latency includes "
        "its own queueing",
        [f"a load generator process was above {LOADGEN_SATURATED_PCT:.0f} % of one core in "
         f"{fmt_pct(saturated)} of samples (limit {fmt_pct(LOADGEN_SATURATED_SHARE)}; "
         "resources.csv)",
         f"its mean CPU {f.loadgen_cpu_mean_pct:.1f} % of a core"],
        ["run with --workers N (Locust worker processes) or fewer users",
         "use FastHttpUser and keep work out of the locustfile's tasks"], 1.0)


def rate_short(f: Facts) -> bool:
    """Open model: the achieved rate fell below RATE_SHORTFALL of the target."""
    return _rate_short(f)


def _rate_short(f: Facts) -> bool:
    return f.model == "open" and bool(f.target_rps) and f.achieved_rps is not None \
        and f.achieved_rps < RATE_SHORTFALL * (f.target_rps or 0.0)


@rule("single", "rate_shortfall", layer="measurement")
def rate_shortfall(f: Facts) -> Finding | None:
    """Open model: the target rate was not achieved (by the harness, or the service)."""
    if not _rate_short(f) or f.achieved_rps is None or not f.target_rps:
        return None
    service_bound = service_saturated(f)
    return Finding(
        "warning" if service_bound else "critical", "measurement",
        f"target rate not achieved: {f.achieved_rps:.1f} of {f.target_rps:g} req/s",
        [f"achieved {fmt_pct(f.achieved_rps / f.target_rps)} of the target (limit "
         f"{fmt_pct(RATE_SHORTFALL)}; load.json)",
         f"{f.dropped or 0} of {f.scheduled or 0} scheduled requests never started, "
         f"{f.late or 0} started late"]
        + (["the service was busy all the time (see its saturation finding): the users "
            "waited for it; latency is still measured from the intended start"]
           if service_bound else []),
        ["see the saturation finding" if service_bound else
         "raise --users (the pool that carries the schedule) or add --workers"],
        1.0 if not service_bound else 0.5)


@rule("single", "late_starts", layer="measurement")
def late_starts(f: Facts) -> Finding | None:
    """Open model: requests started late because the load generator lagged its schedule."""
    if _rate_short(f) or f.model != "open" or f.schedule_delay_share <= SCHEDULE_DELAY_SHARE \
            or service_saturated(f):
        return None
    return Finding(
        "warning", "measurement", "requests started late: the load generator lagged "
        "its schedule",
        [f"the mean schedule delay is {fmt_pct(f.schedule_delay_share)} of the corrected "
         f"latency (limit {fmt_pct(SCHEDULE_DELAY_SHARE)}); {f.late or 0} of "
         f"{f.started or 0} late"],
        ["raise --users or add --workers"], f.schedule_delay_share)


@rule("single", "few_samples", layer="measurement")
def few_samples(f: Facts) -> Finding | None:
    """Too few successful requests for a bound of p99."""
    need = stats.min_samples_for_percentile(99)
    if f.client is None or f.client.count >= need:
        return None
    return Finding(
        "warning", "measurement", f"too few samples for p99: {f.client.count}",
        [f"{f.client.count} successful requests; a 95 % upper bound of p99 needs "
         f">= {need}"], ["run longer or at a higher rate"], 0.0)


@rule("single", "self_check_failed", layer="measurement")
def self_check_failed(f: Facts) -> list[Finding]:
    """A self-check error that puts every number of the run in doubt."""
    return [Finding("warning", "measurement", f"self-check failed: {c.check}",
                    [c.detail + " (summary self-check)"],
                    ["read the run's summary: harness summary RUN"], 0.0)
            for c in f.self_check if c.is_error and c.check in _SELF_CHECKS]


def machine_evidence(f: Facts) -> tuple[float, float, float, list[str]]:
    """(service, load generator, other processes) shares of the machine, and the evidence."""
    system = f.system_cpu_mean_pct or 0.0
    svc, gen = f.machine_share.get("service", 0.0), f.machine_share.get("loadgen", 0.0)
    other = max(0.0, system / 100.0 - svc - gen)
    return svc, gen, other, [
        f"system CPU {system:.1f} % of {f.cpu_count} cores (mean over the window; "
        "resources.csv" + ("; the load generator's machine: the service runs on another "
                           "host)" if f.remote else ")"),
        f"share of the machine: service {fmt_pct(svc)}, load generator {fmt_pct(gen)}, "
        f"other processes {fmt_pct(other)}"]


@rule("single", "machine_contended", layer="measurement")
def machine_contended(f: Facts) -> Finding | None:
    """The machine is CPU-saturated and other processes take a large share of it."""
    if f.system_cpu_mean_pct is None or f.system_cpu_mean_pct < MACHINE_SYSTEM_PCT:
        return None
    _, _, other, evidence = machine_evidence(f)
    if other < MACHINE_OTHER_SHARE:
        return None
    return Finding(
        "warning", "measurement", "the machine is CPU-saturated and other processes take "
        f"{fmt_pct(other)} of it", evidence +
        ["the service and the load generator wait for CPU: every stage is slower than on "
         "a quiet machine, and queueing grows with it"],
        ["rerun on a quiet or dedicated machine before trusting absolute latencies",
         "compare runs made under the same conditions only"], 0.0, {"other": other})


@rule("single", "cannot_localize", layer="measurement")
def cannot_localize(f: Facts) -> Finding | None:
    """Neither stage times nor a profile: say plainly what the run can and cannot tell."""
    ev = f.evidence
    if ev.stages or ev.has("profile") or f.client is None:
        return None
    sees = "client latency and the service's CPU (psutil)" if ev.has("resources") \
        else "client latency only"
    can = ("whether the service is CPU-bound or saturated, not which stage the time goes to"
           if ev.has("resources") else "how slow, not where")
    return Finding(
        "info", "measurement", f"{sees}: the harness cannot localize the time in this run",
        [f"client p50 {fmt_ms_unit(f.client.p50_us)}, p99 {fmt_ms_unit(f.client.p99_us)} over "
         f"{f.client.count} requests: it can tell {can}"],
        [f"to localize: {HOW_TO_ADD[k]}" for k in missing_kinds(ev)], 0.0,
        {"missing": missing_kinds(ev)})
