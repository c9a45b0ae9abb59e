"""A remote target's resources from its own telemetry: the format, written and read back.

Two files, written by the collectors ``process_metrics`` and ``node_metrics``
(harness/run/collectors/) and read by the summary, the diagnosis and the report:

- ``metrics/process.csv``: the ``process_*`` samples that prometheus_client (and most
  exporters) publish on the target's ``/metrics``, one row per scrape: the process's
  **cumulative** CPU seconds, resident and virtual memory, open and maximum fds, and its
  start time (epoch s).
- ``metrics/node.csv``: node_exporter's view of the service's host, one row per scrape:
  the host's **cumulative** CPU seconds summed over its CPUs (all modes, idle, iowait,
  steal), its CPU count, MemTotal, MemAvailable and the 1-minute load average.

Rows keep the counters as scraped, never rates: a rate is a difference of two rows
(:func:`process_intervals`, :func:`node_intervals`), so nothing measured is lost and a
counter that went back (a restart) is left out of the interval it spoils instead of
making a negative rate.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from harness.rundir.trust import MAX_LOG_BYTES, read_bounded

__all__ = ["NODE_COLUMNS", "PROCESS_COLUMNS", "NodeInterval", "NodeSample", "ProcessInterval",
           "ProcessSample", "as_row", "node_intervals", "node_row", "parse_node_csv",
           "parse_process_csv", "process_intervals", "process_row", "read_node", "read_process",
           "select_samples"]

PROCESS_COLUMNS = ("t", "cpu_seconds_total", "resident_memory_bytes", "virtual_memory_bytes",
                   "open_fds", "max_fds", "start_time_seconds", "series")
NODE_COLUMNS = ("t", "cpus", "cpu_total_s", "cpu_idle_s", "cpu_iowait_s", "cpu_steal_s",
                "mem_total_bytes", "mem_available_bytes", "load1")
_PROCESS = {"cpu_seconds_total": "process_cpu_seconds_total",
            "resident_memory_bytes": "process_resident_memory_bytes",
            "virtual_memory_bytes": "process_virtual_memory_bytes",
            "open_fds": "process_open_fds", "max_fds": "process_max_fds",
            "start_time_seconds": "process_start_time_seconds"}
_NODE = ("node_cpu_seconds_total", "node_memory_MemTotal_bytes",
         "node_memory_MemAvailable_bytes", "node_load1")
#: label sets read per sample name: node_cpu_seconds_total has CPUs x 8 modes; a target
#: that sends more is not trusted further
MAX_SERIES = 8192
_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def select_samples(text: str, names: Iterable[str]
                   ) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of ``names`` in a text exposition: name -> [(labels, value)].

    Reads only the lines that start with a wanted name (node_exporter serves ~2,000
    lines; the full parser costs ~30 ms of the harness's CPU per scrape), at most
    :data:`MAX_SERIES` label sets per name; values that are not finite are skipped."""
    wanted = set(names)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(tuple(wanted)):
            continue
        m = _LINE.match(line)
        if m is None or m.group(1) not in wanted:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        found = out.setdefault(m.group(1), [])
        if math.isfinite(value) and len(found) < MAX_SERIES:
            found.append((dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def process_row(text: str) -> dict[str, float | int] | None:
    """One process.csv row (without ``t``) from a /metrics exposition, or None when it
    has no ``process_cpu_seconds_total`` (a multiprocess prometheus_client exports no
    process_* for its workers). ``series``: label sets of the CPU counter; above 1 the
    exporter aggregates several processes and the values are their sums."""
    found = select_samples(text, _PROCESS.values())
    cpu = found.get("process_cpu_seconds_total")
    if not cpu:
        return None
    row: dict[str, float | int] = {"series": len(cpu)}
    for column, name in _PROCESS.items():
        values = [v for _, v in found.get(name, ())]
        if column == "start_time_seconds":  # several processes: the latest start
            row[column] = max(values) if values else float("nan")
        else:
            row[column] = sum(values) if values else float("nan")
    return row


def node_row(text: str) -> dict[str, float | int] | None:
    """One node.csv row (without ``t``) from node_exporter's exposition, or None when it
    has no ``node_cpu_seconds_total`` (not a node_exporter)."""
    found = select_samples(text, _NODE)
    cpu = found.get("node_cpu_seconds_total")
    if not cpu:
        return None
    by_mode: dict[str, float] = {}
    cpus: set[str] = set()
    for labels, value in cpu:
        mode = labels.get("mode", "")
        by_mode[mode] = by_mode.get(mode, 0.0) + value
        cpus.add(labels.get("cpu", ""))

    def one(name: str) -> float:
        values = found.get(name)
        return values[0][1] if values else float("nan")

    return {"cpus": len(cpus), "cpu_total_s": sum(by_mode.values()),
            "cpu_idle_s": by_mode.get("idle", 0.0), "cpu_iowait_s": by_mode.get("iowait", 0.0),
            "cpu_steal_s": by_mode.get("steal", 0.0),
            "mem_total_bytes": one("node_memory_MemTotal_bytes"),
            "mem_available_bytes": one("node_memory_MemAvailable_bytes"),
            "load1": one("node_load1")}


class ProcessSample(NamedTuple):
    """One row of metrics/process.csv: counters as scraped (NaN: the target had none)."""

    t: float
    cpu_seconds_total: float
    resident_memory_bytes: float
    virtual_memory_bytes: float
    open_fds: float
    max_fds: float
    start_time_seconds: float
    series: int


class NodeSample(NamedTuple):
    """One row of metrics/node.csv: the host's counters as scraped."""

    t: float
    cpus: int
    cpu_total_s: float
    cpu_idle_s: float
    cpu_iowait_s: float
    cpu_steal_s: float
    mem_total_bytes: float
    mem_available_bytes: float
    load1: float


def _parse(raw: str, rel: str, columns: tuple[str, ...], ints: set[str]
           ) -> tuple[list[list[float | int]], list[str]]:
    rows: list[list[float | int]] = []
    warnings: list[str] = []
    for number, row in enumerate(csv.DictReader(io.StringIO(raw, newline="")), 2):
        try:
            values = [int(float(row[c])) if c in ints else float(row[c] or "nan")
                      for c in columns]
            if not math.isfinite(float(values[0])):
                raise ValueError("t is not finite")
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{rel}: row {number} is malformed or truncated; skipped")
            continue
        rows.append(values)
    return rows, warnings


def parse_process_csv(raw: str, rel: str = "metrics/process.csv"
                      ) -> tuple[list[ProcessSample], list[str]]:
    rows, warnings = _parse(raw, rel, PROCESS_COLUMNS, {"series"})
    return [ProcessSample(*r) for r in rows], warnings  # type: ignore[arg-type]


def parse_node_csv(raw: str, rel: str = "metrics/node.csv") -> tuple[list[NodeSample], list[str]]:
    rows, warnings = _parse(raw, rel, NODE_COLUMNS, {"cpus"})
    return [NodeSample(*r) for r in rows], warnings  # type: ignore[arg-type]


class ProcessInterval(NamedTuple):
    """The process between two successive scrapes: CPU used as cores (CPU-s per s)."""

    t0: float
    t1: float
    cores: float


def _same_process(a: ProcessSample, b: ProcessSample) -> bool:
    # process_start_time_seconds has the clock-tick resolution (10 ms) of /proc/PID/stat
    # plus the boot time's rounding: equal within a second is the same process.
    return not (abs(a.start_time_seconds - b.start_time_seconds) > 1.0)


def process_intervals(rows: list[ProcessSample]) -> tuple[list[ProcessInterval], int]:
    """CPU cores per interval between successive rows of the same process, and how many
    intervals were left out because the process changed: its start time moved (a restart,
    or another worker answered the scrape) or its CPU counter went back (a reset).
    A reset never gives a negative rate."""
    out: list[ProcessInterval] = []
    changed = 0
    for a, b in zip(rows, rows[1:], strict=False):
        if not b.t > a.t or not math.isfinite(a.cpu_seconds_total + b.cpu_seconds_total):
            continue
        used = b.cpu_seconds_total - a.cpu_seconds_total
        if not _same_process(a, b) or used < 0:
            changed += 1
            continue
        out.append(ProcessInterval(a.t, b.t, used / (b.t - a.t)))
    return out, changed


class NodeInterval(NamedTuple):
    """The host between two successive scrapes: busy CPU (all but idle and iowait, as
    psutil's system row counts it) in cores and as % of its CPUs; iowait and steal as %."""

    t0: float
    t1: float
    busy_cores: float
    busy_pct: float
    iowait_pct: float
    steal_pct: float


def node_intervals(rows: list[NodeSample]) -> tuple[list[NodeInterval], int]:
    """Busy CPU per interval between successive rows, and the intervals left out because a
    counter went back (node_exporter restarted, the host rebooted) or the CPU count changed."""
    out: list[NodeInterval] = []
    reset = 0
    for a, b in zip(rows, rows[1:], strict=False):
        total = b.cpu_total_s - a.cpu_total_s
        idle = (b.cpu_idle_s - a.cpu_idle_s) + (b.cpu_iowait_s - a.cpu_iowait_s)
        iowait, steal = b.cpu_iowait_s - a.cpu_iowait_s, b.cpu_steal_s - a.cpu_steal_s
        if not b.t > a.t:
            continue
        if a.cpus != b.cpus or total <= 0 or min(idle, iowait, steal) < 0 or idle > total:
            reset += 1
            continue
        busy = total - idle
        # node_exporter's counters are the kernel's per-CPU jiffies: busy / total is exact,
        # busy / elapsed needs the scrape times, which lag the kernel's read a little.
        out.append(NodeInterval(a.t, b.t, b.cpus * busy / total, 100.0 * busy / total,
                                100.0 * iowait / total, 100.0 * steal / total))
    return out, reset


def as_row(t: float, values: Mapping[str, float | int], columns: tuple[str, ...]) -> list[str]:
    """A CSV row for ``columns`` (``t`` first), numbers as text, NaN as an empty cell."""
    cells = [f"{t:.3f}"]
    for c in columns[1:]:
        v = values.get(c, float("nan"))
        cells.append("" if isinstance(v, float) and not math.isfinite(v) else
                     (str(v) if isinstance(v, int) else repr(float(v))))
    return cells


def _read(root: Path, rel: str, warnings: list[str]) -> str:
    def warn(message: str) -> None:
        if message not in warnings:
            warnings.append(message)

    return read_bounded(root, rel, MAX_LOG_BYTES, warn) or ""


def read_process(root: Path, warnings: list[str]) -> list[ProcessSample]:
    """metrics/process.csv of the run directory at ``root`` ([] when absent); refused files
    and malformed rows are added to ``warnings`` (a RunDir's ``warnings``)."""
    rows, bad = parse_process_csv(_read(root, "metrics/process.csv", warnings))
    warnings.extend(w for w in bad if w not in warnings)
    return rows


def read_node(root: Path, warnings: list[str]) -> list[NodeSample]:
    """metrics/node.csv of the run directory at ``root``, as :func:`read_process`."""
    rows, bad = parse_node_csv(_read(root, "metrics/node.csv", warnings))
    warnings.extend(w for w in bad if w not in warnings)
    return rows
