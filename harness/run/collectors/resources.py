"""The resources collector: psutil samples of the service, the load generator and the machine.

A thread in the harness process samples, at ``rate_hz`` (4 Hz by default):

- the service's process tree: the top process (``service_master``), its
  children (``service_worker``) and deeper descendants (``service_other``),
  re-discovered at every sample so recycled or added workers appear;
- the load generator's tree (``loadgen``, ``loadgen_worker``);
- profiler processes handed over with :meth:`ResourcesCollector.watch` or the
  ``profiler_pids`` option (``profiler``);
- the whole machine (``system``, pid 0);
- the machine's CPU speed (``harness.run.collectors.cpuprobe``: the CPU time of a fixed unit
  of work), kept in resources.json ``cpu_probe``.

``cpu_percent`` of a process is the share of one core it used since the
previous sample (over 100 for a multi-threaded process on several cores).
psutil's first reading of a process is a meaningless 0.0, so every process is
primed when first seen and gets its first row one sample later. The system row
is the share of all cores (0-100), computed from our own ``cpu_times`` deltas so
no other ``psutil.cpu_percent`` caller in this process can skew it; its
``rss_bytes`` is memory in use (total - available) and its thread, context
switch and fd cells are empty.

Rows are appended to ``resources.csv`` and flushed at every sample, so a run
that dies keeps what was sampled.
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from harness.run.collectors import cpuprobe
from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.proctree import descendants
from harness.rundir import clock
from harness.rundir.atomic import write_text_atomic

__all__ = ["COLUMNS", "EXTERNAL_NOTE", "ROLES", "SPEC", "ResourcesCollector", "ResourcesOptions",
           "check_rate_hz"]

COLUMNS = (
    "t", "pid", "role", "name", "cpu_percent", "rss_bytes", "num_threads",
    "ctx_voluntary", "ctx_involuntary", "num_fds",
)
ROLES = (
    "service_master", "service_worker", "service_other",
    "loadgen", "loadgen_worker", "profiler", "system",
)
EXTERNAL_NOTE = "target is not local: only the load generator and the system are sampled"
DEFAULT_RATE_HZ = 4.0
MAX_RATE_HZ = 100.0
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)

PidSource = Iterable[int] | Callable[[], Iterable[int]]


def check_rate_hz(rate_hz: object) -> float:
    """Return ``rate_hz`` as a float, or raise ValueError naming the bad value."""
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)):
        raise ValueError(f"resources rate_hz must be a number (got {rate_hz!r})")
    if not 0 < rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"resources rate_hz must be > 0 and <= {MAX_RATE_HZ:g} (got {rate_hz!r})")
    return float(rate_hz)


def _descendants(pid: int) -> list[tuple[int, bool]] | None:
    """(pid, is a direct child) for every descendant of ``pid``; None when it is gone."""
    tree = descendants(pid)
    return None if tree is None else [(kid, parent == pid) for kid, parent in tree.items()]


def _busy_total(times: Any) -> tuple[float, float]:
    # Same accounting as psutil.cpu_percent: guest time is already inside user/nice.
    total = sum(times)
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


class ResourcesCollector:
    """psutil sampler over the service tree, load generator tree, profilers and system."""

    name = "resources"

    def __init__(self, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        self.rate_hz = check_rate_hz(rate_hz)
        self._sources: list[tuple[PidSource, str]] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: CollectorContext | None = None
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._procs: dict[int, tuple[psutil.Process, str]] = {}
        self._seen: dict[str, dict[str, Any]] = {}
        self._cpu_prev: tuple[float, float] | None = None
        self._times: list[float] = []
        self._missed = 0
        self._rows = 0
        self._errors: list[str] = []
        self._result: dict[str, Any] | None = None
        self._service_gone_t: float | None = None
        self._probes: list[tuple[float, float]] = []  # (t, µs): the machine's CPU speed

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ResourcesCollector:
        """Build from collector options (see :meth:`apply_options`); raises ValueError."""
        collector = cls()
        collector.apply_options(options)
        return collector

    def apply_options(self, options: Mapping[str, Any]) -> None:
        """Apply ``rate_hz`` (alias ``hz``) and ``profiler_pids``; raises ValueError."""
        unknown = set(options) - {"rate_hz", "hz", "profiler_pids"}
        if unknown:
            raise ValueError(f"unknown resources options {sorted(unknown)} "
                             "(allowed: rate_hz, hz, profiler_pids)")
        for key in ("hz", "rate_hz"):
            if options.get(key) is not None:
                self.rate_hz = check_rate_hz(options[key])
        pids = options.get("profiler_pids")
        if pids is not None:
            self.watch(pids if callable(pids) else list(pids))

    def add_profiler_pids(self, pids: PidSource) -> None:
        """Same as ``watch(pids, "profiler")``; pass ``profile.pids`` (the callable) when the
        profiler has not started its processes yet."""
        self.watch(pids, "profiler")

    def watch(self, pids: PidSource, role: str = "profiler") -> None:
        """Also sample ``pids`` (a list, or a callable asked again at every sample)."""
        if role not in ROLES or role == "system":
            raise ValueError(f"role must be one of {ROLES[:-1]} (got {role!r})")
        if not callable(pids):
            pids = list(pids)
            for pid in pids:
                if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
                    raise ValueError(f"pids to watch must be positive ints (got {pid!r})")
        with self._lock:
            self._sources.append((pids, role))

    # -- lifecycle -------------------------------------------------------

    def start(self, ctx: CollectorContext) -> None:
        if self._ctx is not None:
            raise RuntimeError("resources collector started twice")
        self.apply_options(ctx.options)
        if ctx.collector_pids is not None:  # the processes other collectors run (py-spy)
            self.watch(ctx.collector_pids, "profiler")
        self._ctx = ctx
        self._file = (ctx.run_dir / "resources.csv").open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)
        self._file.flush()
        # Prime cpu_percent of everything visible now, so the first real sample is meaningful.
        self._sample(clock.now(), emit=False)
        self._thread = threading.Thread(target=self._loop, name="resources-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        if self._result is not None:
            return dict(self._result)
        try:
            self._result = self._finish()
        except Exception as exc:  # stop() must never take the run down with it
            self._result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        return dict(self._result)

    # -- sampling --------------------------------------------------------

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic() + period
        while True:
            delay = next_t - time.monotonic()
            if delay < 0:
                # Fell behind (a slow tick, a starved machine): skip the lost slots.
                lost = int(-delay / period) + 1
                self._missed += lost
                next_t += lost * period
                delay = next_t - time.monotonic()
            if self._stop_event.wait(max(delay, 0.0)):
                return
            next_t += period
            try:
                self._sample(clock.now(), emit=True)
            except Exception as exc:
                self._errors.append(f"sampler stopped: {type(exc).__name__}: {exc}")
                return

    def _targets(self) -> list[tuple[int, str]]:
        ctx = self._ctx
        assert ctx is not None
        found: dict[int, str] = {}
        if ctx.service_pid is not None:
            self._add_tree(found, ctx.service_pid, "service_master", "service_worker",
                           "service_other")
        if ctx.loadgen_pid is not None:
            self._add_tree(found, ctx.loadgen_pid, "loadgen", "loadgen_worker", "loadgen_worker")
        with self._lock:
            sources = list(self._sources)
        for source, role in sources:
            try:
                pids = list(source() if callable(source) else source)
            except Exception as exc:
                self._note_error(f"pid source for {role} failed: {type(exc).__name__}: {exc}")
                continue
            for pid in pids:
                found.setdefault(pid, role)
        return list(found.items())

    def _add_tree(self, found: dict[int, str], pid: int, top: str, child: str,
                  deeper: str) -> None:
        tree = _descendants(pid)
        if tree is None:
            if top == "service_master" and self._service_gone_t is None:
                self._service_gone_t = clock.now()
            return
        found.setdefault(pid, top)
        for proc, direct in tree:
            found.setdefault(proc, child if direct else deeper)

    def _sample(self, t: float, emit: bool) -> None:
        rows: list[list[Any]] = []
        live: set[int] = set()
        for pid, role in self._targets():
            live.add(pid)
            row = self._sample_process(t, pid, role, emit)
            if row is not None:
                rows.append(row)
        for pid in set(self._procs) - live:
            self._mark_gone(pid, t)
        system = self._sample_system(t)
        if emit:
            self._probes.append((round(t, 3), cpuprobe.probe_us()))
            if system is not None:
                rows.append(system)
            assert self._writer is not None and self._file is not None
            self._writer.writerows(rows)
            self._file.flush()
            self._rows += len(rows)
            self._times.append(t)

    def _sample_process(self, t: float, pid: int, role: str, emit: bool) -> list[Any] | None:
        cached = self._procs.get(pid)
        try:
            if cached is None or not cached[0].is_running():
                # New pid, or a recycled one: prime; psutil's first cpu_percent is 0.0.
                proc = psutil.Process(pid)
                proc.cpu_percent(None)
                name = proc.name()
                self._procs[pid] = (proc, role)
                self._seen[str(pid)] = {"role": role, "name": name, "first_t": round(t, 3),
                                        "last_t": round(t, 3), "vanished": False}
                return None
            proc, role = cached
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                rss = proc.memory_info().rss
                threads = proc.num_threads()
                ctxs = proc.num_ctx_switches()
                fds = proc.num_fds()
        except _GONE:
            self._mark_gone(pid, t)
            return None
        except psutil.AccessDenied as exc:
            self._note_error(f"access denied to pid {pid} ({role}): {exc}")
            return None
        seen = self._seen[str(pid)]
        seen["last_t"] = round(t, 3)
        if not emit:
            return None
        return [f"{t:.3f}", pid, role, seen["name"], f"{cpu:.1f}", rss, threads,
                ctxs.voluntary, ctxs.involuntary, fds]

    def _sample_system(self, t: float) -> list[Any] | None:
        busy, total = _busy_total(psutil.cpu_times())
        prev, self._cpu_prev = self._cpu_prev, (busy, total)
        if prev is None or total <= prev[1]:
            return None
        pct = min(100.0, max(0.0, 100.0 * (busy - prev[0]) / (total - prev[1])))
        mem = psutil.virtual_memory()
        return [f"{t:.3f}", 0, "system", "system", f"{pct:.1f}", mem.total - mem.available,
                "", "", "", ""]

    def _mark_gone(self, pid: int, t: float) -> None:
        self._procs.pop(pid, None)
        seen = self._seen.get(str(pid))
        if seen is not None and not seen["vanished"]:
            seen["vanished"] = True
            seen["vanished_t"] = round(t, 3)

    def _note_error(self, message: str) -> None:
        # Bounded: a permanently unreadable pid would otherwise grow this every tick.
        if message not in self._errors and len(self._errors) < 50:
            self._errors.append(message)

    # -- results ---------------------------------------------------------

    def _finish(self) -> dict[str, Any]:
        if self._ctx is None:
            return {"status": "not_started", "reason": "stop() called before start()"}
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._file is not None:
            self._file.close()
        times = self._times
        achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 else None
        sampler_error = any(e.startswith("sampler stopped") for e in self._errors)
        status: dict[str, Any] = {
            "status": "error" if sampler_error else "ok",
            "reason": next((e for e in self._errors if e.startswith("sampler stopped")), None),
            "samples": len(times),
            "rows": self._rows,
            "rate_hz": self.rate_hz,
            "achieved_rate_hz": round(achieved, 3) if achieved is not None else None,
            "missed_ticks": self._missed,
            "service_vanished_t": self._service_gone_t,
            "note": EXTERNAL_NOTE if self._ctx.service_pid is None else None,
            "errors": list(self._errors),
        }
        if achieved is not None and achieved < 0.9 * self.rate_hz:
            status["warning"] = (f"sampler achieved {achieved:.2f} Hz of {self.rate_hz:g} Hz: "
                                 "the harness process was starved of CPU")
        full = dict(status, processes=self._seen, columns=list(COLUMNS),
                    cpu_probe={"method": cpuprobe.METHOD, "samples": self._probes})
        _write_json(self._ctx.run_dir / "resources.json", full)
        return status


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class ResourcesOptions:
    """Options of the resources collector: ``rate_hz`` samples per second (``--resources-hz``)."""

    rate_hz: float = DEFAULT_RATE_HZ

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_hz", check_rate_hz(self.rate_hz))


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--resources-hz", type=float, default=DEFAULT_RATE_HZ,
                       help="psutil sampling rate (default 4)")


def _from_args(args: argparse.Namespace) -> ResourcesOptions:
    return ResourcesOptions(rate_hz=args.resources_hz)


# Started with the load driver process: its samples cover the warm-up and the driver's own
# start-up. start() applies ctx.options (these options, as a mapping).
SPEC = CollectorSpec(name="resources", at="process", options=ResourcesOptions,
                     create=lambda _opts, _ctx: ResourcesCollector(), add_flags=_add_flags,
                     from_args=_from_args, stop_timeout_s=15.0,
                     title="resources collector (psutil: service, load generator, machine)")
