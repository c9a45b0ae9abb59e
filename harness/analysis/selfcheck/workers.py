"""Self-checks of a distributed run: workers lost mid-run, workers' clocks, remote workers'
CPU.

A lost worker's share of the load stopped when it was lost: the run's rate, counts and
percentiles lack that share from then on, so the run cannot be trusted as the load that
was asked for (an error: degraded). A worker's clock (harness/load/handshake.py) is
moved to the master's when it joins and checked during the run; the interval series are
exact only when what is left is small against the interval (a warning). Latencies never
mix two clocks (each is two readings of one worker's monotonic clock) and are not
affected either way.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.rules import rule
from harness.analysis.rules.thresholds import (
    CLOCK_UNCERTAINTY_SHARE,
    LOADGEN_SATURATED_PCT,
    LOADGEN_SATURATED_SHARE,
)
from harness.analysis.selfcheck.core import CheckContext, check
from harness.rundir.records import CheckEntry


@rule("self_check", "workers_lost", layer="measurement")
def workers_lost(c: CheckContext) -> CheckEntry | None:
    """A Locust worker lost mid-run (no heartbeat, or no final report): degraded."""
    detail = c.load.workers_detail
    if not detail and not c.load.workers_lost:
        return None
    lost = c.load.workers_lost or []
    n = len(detail or []) or c.load.workers or 0
    if not lost:
        return check("workers_lost", True, "error",
                     f"all {n} workers reported to the end")
    said = "; ".join(
        f"worker {w.get('id')} on "
        f"{w.get('host')} lost {float(w.get('after_s') or 0):.1f} s into the load "
        f"({w.get('why')}), after {w.get('requests_reported', 0)} requests in "
        f"{w.get('intervals_reported', 0)} intervals" for w in lost)
    return check("workers_lost", False, "error",
                 f"{len(lost)} of {n} workers lost: {said}. What they reported is in the "
                 "results; their share of the load after that was not sent, so the rate "
                 "and the counts are short of the plan")


def _uncertainty_ms(w: dict[str, Any]) -> float | None:
    """How far a worker's clock may be from the master's after the correction (ms)."""
    rtt = w.get("rtt_ms")
    if rtt is None:
        return None
    left = abs(float(w.get("run_offset_ms") or 0.0)) + float(w.get("run_rtt_ms") or 0.0) / 2
    return max(float(rtt) / 2, left) if w.get("remote") else left


@rule("self_check", "worker_clocks", layer="measurement")
def worker_clocks(c: CheckContext) -> CheckEntry | None:
    """Workers' clocks against the master's: offsets measured, corrected, what is left."""
    detail = [w for w in (c.load.workers_detail or []) if w.get("rtt_ms") is not None]
    if not detail:
        return None
    interval_ms = 1e3 * c.interval_s
    limit = CLOCK_UNCERTAINTY_SHARE * interval_ms
    worst = max(detail, key=lambda w: _uncertainty_ms(w) or 0.0)
    worst_ms = _uncertainty_ms(worst) or 0.0
    remote = [w for w in detail if w.get("remote")]
    said = (f"{len(detail)} workers ({len(remote)} remote); largest offset corrected "
            f"{max((abs(float(w.get('offset_ms') or 0)) for w in remote), default=0.0):.3f} "
            f"ms; the worst clock is known within {worst_ms:.3f} ms ({worst.get('host')}, "
            f"{worst.get('checks', 0)} checks during the run)")
    if worst_ms > limit:
        said += (f", above {100 * CLOCK_UNCERTAINTY_SHARE:g} % of the {interval_ms:g} ms "
                 "interval: requests completing that close to a boundary may be counted in "
                 "the neighbouring interval (latencies and totals are not affected)")
    return check("worker_clocks", worst_ms <= limit, "warning", said)


@rule("self_check", "workers_cpu", layer="measurement")
def workers_cpu(c: CheckContext) -> CheckEntry | None:
    """Remote workers' CPU, from their heartbeats (psutil sees local processes only): a
    worker at a full core queues its own requests, as loadgen_cpu says of local ones."""
    remote = [w for w in (c.load.workers_detail or []) if w.get("remote") and w.get("cpu_pct")]
    if not remote:
        return None
    rows = []
    for w in remote:
        cpu = [float(x) for x in w["cpu_pct"]]
        share = sum(x > LOADGEN_SATURATED_PCT for x in cpu) / len(cpu)
        rows.append((share, w, sum(cpu) / len(cpu), max(cpu)))
    share, worst, mean, peak = max(rows, key=lambda r: (r[0], r[2]))
    return check("workers_cpu", share <= LOADGEN_SATURATED_SHARE, "error",
                 f"{len(remote)} remote workers, from their heartbeats; the busiest, "
                 f"{worst.get('host')} ({worst.get('id')}), above "
                 f"{LOADGEN_SATURATED_PCT:g} % of a core in {100 * share:.1f} % of samples "
                 f"(mean {mean:.1f} %, max {peak:.1f} %); limit "
                 f"{100 * LOADGEN_SATURATED_SHARE:g} % of samples")
