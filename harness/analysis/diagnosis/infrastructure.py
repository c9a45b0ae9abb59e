"""Diagnosis rules of the infrastructure layer: the machine, the workers, queueing, memory.

Registered in the ``single`` book; thresholds and their reasons:
``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.facts import Facts, active_workers, stage_layer
from harness.analysis.diagnosis.measurement import machine_evidence
from harness.analysis.diagnosis.measures import busy_fraction, machine_contended, service_share
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    BUSY_SATURATED,
    IMBALANCE_MIN_CPU,
    IMBALANCE_SHARE,
    MACHINE_OTHER_SHARE,
    MACHINE_SERVICE_CRITICAL,
    MACHINE_SYSTEM_PCT,
    RESIDUAL_BUSY,
    RESIDUAL_INFO,
    RESIDUAL_WARNING,
    RSS_FIT_R2,
    RSS_GROWTH_BYTES,
    RSS_GROWTH_FRACTION,
    SERVICE_CPU_SATURATED,
    WORKER_CPU_SATURATED,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__: list[str] = []



@rule("single", "machine_saturated", layer="infrastructure", uses=("resources",))
def machine_saturated(f: Facts) -> Finding | None:
    """The machine's CPUs are saturated by the service and its load (not by others)."""
    if f.system_cpu_mean_pct is None or f.system_cpu_mean_pct < MACHINE_SYSTEM_PCT:
        return None
    svc, _, other, evidence = machine_evidence(f)
    if other >= MACHINE_OTHER_SHARE:
        return None  # the measurement layer's machine_contended
    return Finding(
        "critical" if svc >= MACHINE_SERVICE_CRITICAL else "warning", "infrastructure",
        "the machine's CPUs are saturated by the service and its load", evidence,
        ["give the service more cores, or put the load generator on another machine"], svc)


def _saturation_evidence(f: Facts, busy: float) -> list[str]:
    residual = f.residual.share if f.residual else 0.0
    worker_cpu = [w.cpu_mean_pct for w in active_workers(f)]
    evidence = [f"{f.achieved_rps:.1f} req/s x {_ms(f.app.mean_us if f.app else None)} "
                f"mean service time / {f.concurrency} worker slots = "
                f"{fmt_pct(min(busy, 1.0))} busy (limit {fmt_pct(BUSY_SATURATED)})"]
    if f.residual:
        evidence.append(f"residual (queueing before the service) {fmt_pct(residual)} of the "
                        f"latency, mean {_ms(f.residual.mean_us)}, p99 "
                        f"{_ms(f.residual.p99_us)}")
    if worker_cpu:
        cpu_bound = min(worker_cpu) >= WORKER_CPU_SATURATED
        evidence.append("worker CPU (% of one core): " + ", ".join(
            f"{c:.0f}" for c in worker_cpu) + (" — CPU-bound" if cpu_bound else
                                               " — below a full core: they also wait"))
    if f.model == "open" and f.target_rps:
        evidence.append(f"achieved {f.achieved_rps:.1f} of {f.target_rps:g} req/s")
    return evidence


@rule("single", "saturation", layer="infrastructure", uses=("stages", "resources"))
def saturation(f: Facts) -> Finding | None:
    """The service's workers were busy all the time (utilization law): requests queue."""
    busy = busy_fraction(f)
    if busy is None or busy < BUSY_SATURATED:
        return None
    evidence = _saturation_evidence(f, busy)
    dominant = max(f.stages.values(), key=lambda s: s.share, default=None)
    if dominant is not None:
        evidence.append(f"the service's time goes mostly to '{dominant.name}' "
                        f"({stage_layer(dominant.name)}): "
                        f"{fmt_pct(service_share(f, dominant))} of it")
    residual = f.residual.share if f.residual else 0.0
    return Finding(
        "critical", "infrastructure", "the service is saturated: too few workers for "
        "the load, requests queue", evidence,
        ["add workers or threads (--service-workers), or lower the rate",
         "find the capacity: the highest rate that keeps the busy share below 80 %",
         "make each request cheaper (the largest stage below)"],
        min(1.0, residual + f.schedule_delay_share),
        {"busy": busy, "dominant_stage": dominant.name if dominant else None})


@rule("single", "queueing", layer="infrastructure", uses=("stages", "resources"))
def queueing(f: Facts) -> Finding | None:
    """Much of the latency is outside the service's own timing (short of saturation)."""
    busy = busy_fraction(f)
    residual = f.residual.share if f.residual else 0.0
    if (busy is not None and busy >= BUSY_SATURATED) or f.residual is None \
            or residual < RESIDUAL_INFO:
        return None
    # On a machine where other processes take the CPU, the workers are slow because
    # they wait for it, and queueing follows: the machine finding already says so.
    warn = residual >= RESIDUAL_WARNING and busy is not None and busy >= RESIDUAL_BUSY \
        and not machine_contended(f)
    return Finding(
        "warning" if warn else "info", "infrastructure",
        f"queueing: {fmt_pct(residual)} of the latency is outside the service's own timing",
        [f"residual mean {_ms(f.residual.mean_us)}, p99 {_ms(f.residual.p99_us)}",
         f"workers busy {fmt_pct(busy)} of the time" if busy is not None
         else "worker busy share unknown"],
        ["requests wait for a free worker when they arrive together: add workers or "
         "threads", "check the network and the WSGI server's accept queue"],
        residual, {"busy": busy})


@rule("single", "service_cpu", layer="infrastructure", uses=("resources", "node_metrics"))
def service_cpu(f: Facts) -> Finding | None:
    """The service's process tree uses every CPU of the machine (a remote target: of its
    host, whose CPU count node_exporter gives)."""
    total = f.service_cpu_mean_pct
    local = f.service_cpu_source == "psutil"
    cpus = f.cpu_count if local else (f.host.cpus if f.host is not None else None)
    if total is None or cpus is None or total < SERVICE_CPU_SATURATED * 100.0 * cpus:
        return None
    return Finding(
        "critical", "infrastructure", "the service uses every CPU of "
        + ("the machine" if local else "its host"),
        [f"service tree CPU {total:.0f} % of {cpus} cores x 100 %" if local else
         f"the target's process CPU {total:.0f} % of {cpus} cores x 100 % "
         f"({f.service_cpu_source}; the host's cores from node_exporter)"],
        ["more cores, or a cheaper model path"], 0.5)


@rule("single", "worker_imbalance", layer="infrastructure", uses=("resources",))
def worker_imbalance(f: Facts) -> Finding | None:
    """One worker does most of the work (connections pinned to it)."""
    workers = active_workers(f)  # multiprocessing's resource tracker is no worker
    worker_cpu = [w.cpu_mean_pct for w in workers]
    if len(workers) < 2 or sum(worker_cpu) < IMBALANCE_MIN_CPU:
        return None
    top = max(workers, key=lambda w: w.cpu_mean_pct)
    share = top.cpu_mean_pct / sum(worker_cpu)
    if share < IMBALANCE_SHARE:
        return None
    return Finding(
        "warning", "infrastructure", f"worker imbalance: pid {top.pid} does {fmt_pct(share)} "
        "of the work",
        ["worker CPU (% of one core): " + ", ".join(
            f"{w.pid}: {w.cpu_mean_pct:.0f}" for w in workers)],
        ["check the load balancing in front of the workers (SO_REUSEPORT, keep-alive "
         "connections pinned to one worker)"], share - 1.0 / len(workers))


@rule("single", "memory_growth", layer="infrastructure", uses=("resources",))
def memory_growth(f: Facts) -> Finding | None:
    """The service's memory grows steadily (a least-squares line that fits)."""
    if f.rss_slope_bytes_per_s is None or f.rss_fit_r2 is None or not f.rss_start_bytes:
        return None
    grown = f.rss_slope_bytes_per_s * f.duration_s
    if grown < RSS_GROWTH_BYTES or grown < RSS_GROWTH_FRACTION * f.rss_start_bytes \
            or f.rss_fit_r2 < RSS_FIT_R2:
        return None
    return Finding(
        "warning", "infrastructure",
        f"memory grows steadily: {grown / 2**20:.1f} MiB over the run",
        [f"service RSS slope {f.rss_slope_bytes_per_s / 2**20 * 60:.1f} MiB/min "
         f"(r² {f.rss_fit_r2:.2f}) from {f.rss_start_bytes / 2**20:.0f} MiB"],
        ["run longer to see if it levels off; look for unbounded caches"], 0.2)
