"""Diagnosis rules of a target on another host: its host's CPU, steal and memory.

The service's host is not the load generator's machine, so psutil's machine rules
(``machine_saturated``, ``machine_contended``) speak of the load generator's side only.
node_exporter on the service's host (``harness run --node-metrics URL``) gives the host's
side; the target's own process_* (its /metrics) give the service's share of it. Registered
in the ``single`` book (infrastructure layer); thresholds: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.facts import Facts
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    HOST_MEM_AVAILABLE_SHARE,
    HOST_STEAL_PCT,
    MACHINE_OTHER_SHARE,
    MACHINE_SERVICE_CRITICAL,
    MACHINE_SYSTEM_PCT,
)
from harness.units import fmt_pct

__all__ = ["host_evidence"]


def host_evidence(f: Facts) -> tuple[float | None, list[str]]:
    """The target's share of its host (None when its process_* are not known) and the
    evidence lines, each naming its source."""
    h = f.host
    assert h is not None
    lines = [f"service host CPU {h.cpu_mean_pct:.1f} % of {h.cpus} cores, "
             f"{h.busy_cores_mean:.2f} busy cores (mean over the window; {h.source})"]
    if f.service_cpu_source == "psutil" or f.service_cpu_mean_pct is None:
        return None, lines
    svc = f.service_cpu_mean_pct / 100.0 / max(1, h.cpus)
    other = max(0.0, h.cpu_mean_pct / 100.0 - svc)
    lines.append(f"share of the host: the target's process {fmt_pct(svc)} "
                 f"({f.service_cpu_source}), everything else {fmt_pct(other)}")
    return svc, lines


def _saturated(f: Facts) -> Finding | None:
    h = f.host
    if h is None or h.cpu_mean_pct < MACHINE_SYSTEM_PCT:
        return None
    svc, evidence = host_evidence(f)
    other = h.cpu_mean_pct / 100.0 - svc if svc is not None else None
    if other is not None and other >= MACHINE_OTHER_SHARE:
        return Finding(
            "warning", "infrastructure", "the service's host is CPU-saturated and other "
            f"processes take {fmt_pct(other)} of it", evidence,
            ["find what else runs on the service's host (its other processes, other "
             "containers); compare runs made under the same conditions only"], 0.0,
            {"other": other})
    if other is None:
        return Finding(
            "warning", "infrastructure", "the service's host is CPU-saturated", evidence +
            ["whose CPU it is is not known: the target's /metrics has no process_*"],
            ["give the service's host more cores, or find what else runs there"], 0.3)
    return Finding(
        "critical" if (svc or 0.0) >= MACHINE_SERVICE_CRITICAL else "warning",
        "infrastructure", "the service's host's CPUs are saturated by the service", evidence,
        ["give the service more cores, or a cheaper model path"], svc or 0.0)


@rule("single", "service_host", layer="infrastructure",
      uses=("node_metrics", "resources"))
def service_host(f: Facts) -> list[Finding]:
    """node_exporter on the service's host: CPU saturated (by the service or by others),
    CPU stolen by the hypervisor, memory nearly exhausted."""
    h = f.host
    if h is None:
        return []
    found = [x for x in (_saturated(f),) if x is not None]
    if h.steal_mean_pct is not None and h.steal_mean_pct >= HOST_STEAL_PCT:
        found.append(Finding(
            "warning", "infrastructure", f"the hypervisor took {h.steal_mean_pct:.1f} % of "
            "the service host's CPU time (steal)",
            [f"steal {h.steal_mean_pct:.1f} % (limit {HOST_STEAL_PCT:.0f} %; {h.source})"],
            ["move the service to a host without noisy neighbours (dedicated or larger "
             "instances) before trusting absolute latencies"], 0.0))
    total, avail = h.mem_total_bytes, h.mem_available_min_bytes
    if total and avail is not None and avail / total < HOST_MEM_AVAILABLE_SHARE:
        found.append(Finding(
            "warning", "infrastructure", "the service's host is short of memory: "
            f"{avail / 2**20:.0f} MiB of {total / 2**30:.1f} GiB available at the lowest",
            [f"MemAvailable {fmt_pct(avail / total)} of MemTotal (limit "
             f"{fmt_pct(HOST_MEM_AVAILABLE_SHARE)}; {h.source})"],
            ["the kernel evicts the page cache the model lives in: give the host memory, "
             "or run fewer workers"], 0.1))
    return found
