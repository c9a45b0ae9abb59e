"""The summary's resources of a target on another host, from the run's telemetry files.

``metrics/process.csv`` (the target's own process_* metrics) and ``metrics/node.csv``
(node_exporter on its host), harness.rundir.telemetry. CPU figures are scrape-to-scrape
rates over the intervals that lie mostly inside the measured window (as the psutil block
keeps its samples); memory is read from the rows inside the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from harness.rundir import RunDir
from harness.rundir.records import HostResources, TargetProcessResources
from harness.rundir.telemetry import (
    NodeInterval,
    ProcessInterval,
    node_intervals,
    process_intervals,
    read_node,
    read_process,
)

__all__ = ["host_block", "node_source", "process_source", "target_process_block"]

IntervalT = TypeVar("IntervalT", ProcessInterval, NodeInterval)


def process_source(url: str) -> str:
    """How the summary, report and diagnosis name the target's process figures."""
    return f"process_cpu_seconds_total of {url} (remote target)"


def node_source(url: str) -> str:
    return f"node_exporter at {url}"


def _inside(intervals: Sequence[IntervalT], start: float, end: float) -> list[IntervalT]:
    return [iv for iv in intervals if start <= (iv.t0 + iv.t1) / 2 <= end]


def _stats(values: list[float], scale: float = 1.0) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float) * scale
    return (round(float(arr.mean()), 2), round(float(np.percentile(arr, 95)), 2),
            round(float(arr.max()), 2))


def _int(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None


def _status(rd: RunDir, name: str) -> dict[str, Any]:
    found = rd.read_json(f"metrics/{name}_status.json") or \
        ((rd.meta.get("collectors") or {}).get(f"{name}_metrics"))
    return found if isinstance(found, dict) else {}


def target_process_block(rd: RunDir, start: float, end: float
                         ) -> TargetProcessResources | None:
    """The target's process over the window from metrics/process.csv, or None."""
    rows = read_process(rd.path, rd.warnings)
    if not rows:
        return None
    status = _status(rd, "process")
    intervals, left_out = process_intervals(rows)
    inside_iv = _inside(intervals, start, end)
    inside = [r for r in rows if start <= r.t <= end] or rows
    cpu: tuple[float | None, float | None, float | None] = (
        _stats([iv.cores for iv in inside_iv], 100.0) if inside_iv else (None, None, None))
    rss = [int(r.resident_memory_bytes) for r in inside
           if math.isfinite(r.resident_memory_bytes)] or [0]
    fds = [r.open_fds for r in inside if math.isfinite(r.open_fds)]
    vms = [r.virtual_memory_bytes for r in inside if math.isfinite(r.virtual_memory_bytes)]
    url = str(status.get("url") or "/metrics")
    return TargetProcessResources(
        process_source(url), url, str(status.get("what") or "process_* of /metrics"),
        int(status.get("processes") or 1), len(inside), len(inside_iv), left_out, *cpu,
        rss[0], rss[-1], max(rss), rss[-1] - rss[0],
        int(max(fds)) if fds else None, _int(inside[-1].max_fds),
        int(max(vms)) if vms else None)


def host_block(rd: RunDir, start: float, end: float) -> HostResources | None:
    """The service's host over the window from metrics/node.csv, or None (no rate)."""
    rows = read_node(rd.path, rd.warnings)
    intervals, left_out = node_intervals(rows)
    inside_iv = _inside(intervals, start, end)
    if not inside_iv:
        return None
    status = _status(rd, "node")
    inside = [r for r in rows if start <= r.t <= end] or rows
    busy = _stats([iv.busy_pct for iv in inside_iv])
    used = [r.mem_total_bytes - r.mem_available_bytes for r in inside
            if math.isfinite(r.mem_total_bytes - r.mem_available_bytes)]
    avail = [r.mem_available_bytes for r in inside if math.isfinite(r.mem_available_bytes)]
    load = [r.load1 for r in inside if math.isfinite(r.load1)]
    url = str(status.get("url") or "node_exporter")

    def mean(values: list[float], digits: int = 2) -> float:
        return round(sum(values) / len(values), digits)

    return HostResources(
        node_source(url), url, inside[-1].cpus, len(inside), len(inside_iv), left_out, *busy,
        mean([iv.busy_cores for iv in inside_iv], 3), mean([iv.iowait_pct for iv in inside_iv]),
        mean([iv.steal_pct for iv in inside_iv]), _int(inside[-1].mem_total_bytes),
        int(mean(used, 0)) if used else None, int(min(avail)) if avail else None,
        mean(load) if load else None, round(max(load), 2) if load else None)
