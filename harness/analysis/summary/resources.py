"""The summary's resources block (psutil samples of the measured window) and profile shares."""

from __future__ import annotations

import numpy as np

from harness.analysis.rules.thresholds import LOADGEN_SATURATED_PCT
from harness.analysis.summary.remote import host_block, target_process_block
from harness.rundir import RunDir
from harness.rundir.files import ResourceSample
from harness.rundir.records import (
    LoadgenResources,
    ProcessCPU,
    ProfileView,
    Resources,
    ServiceResources,
    SystemResources,
)

__all__ = ["LOADGEN_ROLES", "SERVICE_ROLES", "cpu_probe_block", "profile_shares",
           "resources_block"]

SERVICE_ROLES = ("service_master", "service_worker", "service_other")
LOADGEN_ROLES = ("loadgen", "loadgen_worker")


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 2)


def _processes(inside: list[ResourceSample], roles: tuple[str, ...]) -> tuple[ProcessCPU, ...]:
    procs = []
    for pid, role in sorted({(r.pid, r.role) for r in inside if r.role in roles}):
        cpu = [r.cpu_percent for r in inside if r.pid == pid]
        procs.append(ProcessCPU(
            pid, role, round(sum(cpu) / len(cpu), 2), _pct(cpu, 95), round(max(cpu), 2),
            round(sum(c > LOADGEN_SATURATED_PCT for c in cpu) / len(cpu), 4)))
    return tuple(procs)


def _inside(rd: RunDir, rows: list[ResourceSample], start: float, end: float
            ) -> list[ResourceSample]:
    # A sample at t holds the CPU used over (t - period, t]: keep the samples whose period
    # lies mostly inside the window, so the harness's own start-up (imports, spawning
    # users) before the load and its shutdown after it are not charged to the run.
    stamps = sorted({r.t for r in rows})
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False) if b > a)
    period = gaps[len(gaps) // 2] if gaps else 0.0
    inside = [r for r in rows if start <= r.t - period / 2 <= end]
    if not inside:
        rd.warnings.append("resources.csv has no sample inside the measured window; used all")
        inside = rows
    return inside


def _service(inside: list[ResourceSample], by_t: dict[float, list[ResourceSample]]
             ) -> ServiceResources | None:
    times = [t for t in sorted(by_t) if any(r.role in SERVICE_ROLES for r in by_t[t])]
    if not times:
        return None
    cpu = [sum(r.cpu_percent for r in by_t[t] if r.role in SERVICE_ROLES) for t in times]
    rss = [sum(r.rss_bytes for r in by_t[t] if r.role in SERVICE_ROLES) for t in times]
    return ServiceResources(round(sum(cpu) / len(cpu), 2), _pct(cpu, 95), round(max(cpu), 2),
                            _processes(inside, ("service_worker",)), rss[0], rss[-1],
                            max(rss), rss[-1] - rss[0])


def resources_block(rd: RunDir, start: float, end: float) -> Resources | None:
    """CPU and memory of the service, the load generator and the machine over the window;
    a target on another host from its telemetry (``target_process``, ``host``)."""
    rows = rd.resources()
    target, host = target_process_block(rd, start, end), host_block(rd, start, end)
    if not rows:
        if target is None and host is None:
            return None
        cpus = int((rd.meta.get("environment") or {}).get("cpu_logical") or 1)
        return Resources(0, cpus, None, None, None, {}, target, host)
    inside = _inside(rd, rows, start, end)
    by_t: dict[float, list[ResourceSample]] = {t: [] for t in sorted({r.t for r in inside})}
    for r in inside:
        by_t[r.t].append(r)
    cpus = int((rd.meta.get("environment") or {}).get("cpu_logical") or 1)
    service = _service(inside, by_t)
    loadgen = None
    procs = _processes(inside, LOADGEN_ROLES)
    if procs:
        total = [sum(r.cpu_percent for r in by_t[t] if r.role in LOADGEN_ROLES) for t in by_t]
        loadgen = LoadgenResources(round(sum(total) / len(total), 2), round(max(total), 2),
                                   procs)
    system = None
    sys_cpu = [r.cpu_percent for r in inside if r.role == "system"]
    if sys_cpu:
        system = SystemResources(round(sum(sys_cpu) / len(sys_cpu), 2), _pct(sys_cpu, 95),
                                 round(max(sys_cpu), 2))
    share = {key: round(block.cpu_mean_pct / (100.0 * cpus), 4) if block is not None else None
             for key, block in (("service", service), ("loadgen", loadgen))}
    return Resources(len(by_t), cpus, service, loadgen, system, share, target, host,
                     cpu_probe_block(rd, start, end))


def cpu_probe_block(rd: RunDir, start: float, end: float) -> dict[str, float] | None:
    """The machine's CPU speed probes (resources.json ``cpu_probe``) inside the window."""
    doc = rd.read_json("resources.json") or {}
    probe = doc.get("cpu_probe")
    samples = probe.get("samples") if isinstance(probe, dict) else None
    if not isinstance(samples, list):
        return None
    inside = [float(s[1]) for s in samples if isinstance(s, list | tuple) and len(s) == 2
              and all(isinstance(x, int | float) for x in s) and start <= s[0] <= end]
    if not inside:
        return None
    return {"mean_us": round(sum(inside) / len(inside), 1), "median_us": _pct(inside, 50),
            "p10_us": _pct(inside, 10), "p90_us": _pct(inside, 90),
            "samples": float(len(inside))}


def profile_shares(rd: RunDir) -> dict[str, ProfileView] | None:
    """Samples per stage of each profile view (profile/stages.json), as shares."""
    stages = rd.read_json("profile/stages.json")
    if not stages:
        return None
    # stages.json names its map in "stage_map" (with how it was chosen) or, before that
    # existed, only in "map"
    choice, old = stages.get("stage_map"), stages.get("map")
    choice = choice if isinstance(choice, dict) else {}
    old = old if isinstance(old, dict) else {}
    name, chosen = choice.get("name") or old.get("name"), choice.get("chosen")
    views: dict[str, ProfileView] = {}
    for view in ("oncpu", "wall"):
        counts = stages.get(view)
        if not isinstance(counts, dict):
            continue
        total = sum(n for n in counts.values() if isinstance(n, int))
        if total:
            views[view] = ProfileView(total, {
                k: round(n / total, 4) for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
                if isinstance(n, int) and n},
                name if isinstance(name, str) else None,
                chosen if isinstance(chosen, str) else None)
    return views or None
