"""What a diagnosis reads from a run directory beyond its summary: the memory trend, the
machine's CPU per interval, where a stage's tail fell, the model versions and the
service's concurrency. Pure readers returning plain values; ``facts`` assembles them."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy.stats import linregress

from harness import stats
from harness.analysis.summary import LOADGEN_ROLES, SERVICE_ROLES
from harness.rundir import RunDir
from harness.rundir.telemetry import read_process

__all__ = ["HELPER_COMMAND", "concurrency", "interval_machine", "model_versions",
           "process_commands", "rss_trend", "service_processes", "tail_by_class",
           "tail_intervals"]

#: command lines of processes that belong to a service's tree but serve no requests
HELPER_COMMAND = re.compile(r"multiprocessing[./](resource_tracker|forkserver|semaphore_tracker)"
                            r"|from multiprocessing\.(resource_tracker|forkserver) import")


def rss_trend(rd: RunDir, start: float, end: float, remote: bool = False
              ) -> tuple[float | None, float | None]:
    """Least-squares slope (bytes/s) and r² of the service tree's RSS over the window
    (``scipy.stats.linregress``; r² is 0 for a flat line, as no trend explains it);
    ``remote``: of the target's process_resident_memory_bytes (metrics/process.csv)."""
    per_t: dict[float, int] = {}
    if remote:
        per_t = {r.t: int(r.resident_memory_bytes) for r in read_process(rd.path, rd.warnings)
                 if start - 0.5 <= r.t <= end + 0.5 and r.resident_memory_bytes > 0}
    for r in [] if remote else rd.resources():
        if r.role in SERVICE_ROLES and start - 0.5 <= r.t <= end + 0.5:
            per_t[r.t] = per_t.get(r.t, 0) + int(r.rss_bytes)
    if len(per_t) < 8:
        return None, None
    t = np.array(sorted(per_t), dtype=float)
    y = np.array([per_t[k] for k in sorted(per_t)], dtype=float)
    fit = linregress(t - t[0], y)
    slope, rvalue = float(fit.slope), float(fit.rvalue)
    return slope, rvalue * rvalue if np.isfinite(rvalue) else 0.0


def model_versions(meta: dict[str, Any]) -> dict[str, str]:
    """Model name -> version served, from run.json's target (models, service options)."""
    target = meta.get("target") or {}
    found: dict[str, str] = {}
    for name, info in (target.get("models") or {}).items():
        if isinstance(info, dict) and info.get("default_version"):
            found[str(name)] = str(info["default_version"])
    asked = (target.get("service_options") or {})
    for key in ("versions", "model_versions"):
        for name, version in (asked.get(key) or {}).items():
            found[str(name)] = str(version)
    return found


def concurrency(meta: dict[str, Any], workers: int) -> int | None:
    """Requests the service can serve at once (workers x threads), when known."""
    opts = (meta.get("target") or {}).get("service_options") or {}
    if isinstance(opts.get("workers"), int) and opts["workers"] > 0:
        threads = opts.get("threads") if opts.get("worker_class") == "gthread" else 1
        return int(opts["workers"]) * int(threads or 1)
    return workers or None


def interval_machine(rd: RunDir, starts: list[tuple[float, float]], cpus: int
                     ) -> dict[float, tuple[float, float]]:
    """Interval start -> (system CPU %, other processes' share of the machine), from the
    resources samples that fall inside the interval."""
    own_roles = set(SERVICE_ROLES) | set(LOADGEN_ROLES) | {"profiler"}
    by_t: dict[float, list[float]] = {}  # t -> [system %, own % of one core]
    for r in rd.resources():
        slot = by_t.setdefault(r.t, [-1.0, 0.0])
        if r.role == "system":
            slot[0] = r.cpu_percent
        elif r.role in own_roles:
            slot[1] += r.cpu_percent
    samples = sorted((t, s, own) for t, (s, own) in by_t.items() if s >= 0)
    out: dict[float, tuple[float, float]] = {}
    i = 0
    for t0, dt in sorted(starts):
        while i < len(samples) and samples[i][0] < t0:
            i += 1
        j = i
        inside = []
        while j < len(samples) and samples[j][0] < t0 + dt:
            inside.append(samples[j])
            j += 1
        if inside:
            system = sum(s for _, s, _ in inside) / len(inside)
            own = sum(o for _, _, o in inside) / len(inside) / (100.0 * max(1, cpus))
            out[round(t0, 3)] = (system, max(0.0, system / 100.0 - own))
    return out


def tail_intervals(rd: RunDir, stage: str | None, p99_us: int, start: float,
                   metric: str = "stage"
                   ) -> tuple[set[tuple[float, float]], list[tuple[float, int, int]]]:
    """The window's intervals in which the stage (or the ``client``: ``metric="client"``,
    ``stage=None``) has values, as (start, length), and (start, values, values >= p99)."""
    spans, counts = set(), []
    for t, dt, hist in rd.interval_histograms(metric, stage=stage):
        if t < start - 1e-6:
            continue  # warm-up
        arr = stats.counts_array(hist)
        idx = hist.get_counts_array_index(int(p99_us))
        spans.add((round(t, 3), dt))
        counts.append((round(t, 3), int(arr.sum()), int(arr[idx:].sum())))
    return spans, counts


def tail_by_class(rd: RunDir, classes: dict[str, tuple[str, str | None]], p99_us: int
                  ) -> dict[str, tuple[int, int]]:
    """Per class label -> (successful requests, those at or above ``p99_us``), for the
    classes given as label -> (request name, tag): where the client's tail comes from."""
    out = {}
    for label, (name, tag) in classes.items():
        hist = rd.histogram("client", name, tag=tag)
        total = int(hist.get_total_count())
        if total:
            arr = stats.counts_array(hist)
            out[label] = (total, int(arr[hist.get_counts_array_index(int(p99_us)):].sum()))
    return out


def service_processes(rd: RunDir, start: float, end: float
                      ) -> list[tuple[int, str, float, float]]:
    """(pid, role, mean CPU % of one core, max) of each service process over the window
    (psutil samples whose period ends inside it)."""
    per: dict[tuple[int, str], list[float]] = {}
    for r in rd.resources():
        if r.role in SERVICE_ROLES and start < r.t <= end + 0.5:
            per.setdefault((r.pid, r.role), []).append(float(r.cpu_percent))
    return [(pid, role, sum(v) / len(v), max(v)) for (pid, role), v in sorted(per.items())]


def process_commands(rd: RunDir) -> dict[int, str]:
    """pid -> command line of the service's processes the profile collector saw."""
    status = rd.profile_status() or {}
    out = {}
    for p in status.get("processes") or []:
        if isinstance(p, dict) and isinstance(p.get("pid"), int):
            out[int(p["pid"])] = str(p.get("command") or "")[:2000]
    return out
