"""The profile collector: py-spy attached to the service for the measured window.

py-spy samples the service's processes from outside (ptrace), so the service needs
no change. One py-spy runs per sampled process and view (``py-spy record --pid PID
--format raw``), not one ``--subprocesses`` py-spy on the service's top process:
measured on the reference service (2 gunicorn workers, 20 Hz, 10 s), one
``--subprocesses`` py-spy cost 0.54 CPU-s and one per worker 0.30 CPU-s, because
``--subprocesses`` also samples the idle master and keeps polling the process table.
The collector re-reads the service's process tree twice a second (from /proc), so a
worker gunicorn starts after recycling one gets its own py-spy within half a second.
A process is sampled when it has no children (a worker; the service itself when it
is a single process) or when it used >= 5 % of a core over two looks in a row (a
parent that serves requests itself); an idle parent is listed in status.json as not
sampled. Each process's stacks are written under ``process PID:"command"`` frames
for the chain from the service's top process down, as ``--subprocesses`` writes them.

Views:

- ``oncpu`` (default): py-spy's default mode, idle threads dropped: where CPU
  time goes. Not ``--gil``: sklearn/numpy release the GIL while they compute,
  and those samples are exactly the inference time we want to see.
- ``wall`` (opt-in, ``--idle``): every thread, running or waiting: where wall
  time goes. A second py-spy pauses the workers twice as often, so it costs
  throughput; see benchmarks/profiler_overhead.py and docs/collectors.md.

The collector waits in a thread until ``measure_start``, runs py-spy until
``measure_end`` or ``stop()``, stops it with SIGINT (py-spy writes its output
on SIGINT; killed after a timeout), then writes, under ``profile/``:
``VIEW.collapsed`` (py-spy's raw output, all processes), ``VIEW.speedscope.json``,
``stages.json`` (see stagemap.py), ``py-spy.log`` (py-spy's own output, per process)
and ``status.json``. When py-spy is missing or cannot attach, the run goes on and
``status.json`` says why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.run.collectors.base import CollectorContext
from harness.run.collectors.proctree import cmdline, cpu_seconds, descendants, started_at
from harness.run.collectors.stagemap import StageMap, build_stages, load_stage_map
from harness.rundir.atomic import write_text_atomic
from harness.rundir.stacks import (
    Stack,
    empty_samples,
    parse_collapsed,
    process_frame,
    to_speedscope,
    write_collapsed,
)

__all__ = ["DEFAULT_RATE_HZ", "VIEWS", "ProfileCollector", "find_pyspy", "parse_pyspy_log"]

VIEWS = ("oncpu", "wall")
DEFAULT_RATE_HZ = 20  # measured: keeps the capacity cost within 5 % (docs/collectors.md)
DEFAULT_VIEWS = ("oncpu",)
MAX_RATE_HZ = 1000
POLL_S = 0.5  # how often the service's process tree is re-read for new processes
BUSY_SHARE = 0.05  # a parent process using this share of a core is sampled too
_OPTION_KEYS = {"rate_hz", "views", "wall", "pyspy", "stage_map", "nonblocking",
                "stop_timeout_s"}
_SAMPLES_RE = re.compile(r"Samples: (\d+) Errors: (\d+)")
_BEHIND_RE = re.compile(r"([\d.]+)\s*(ns|µs|us|ms|s) behind in sampling")
_UNIT_S = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def check_rate(rate_hz: object) -> int:
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, int):
        raise ValueError(f"profile rate_hz must be an integer (got {rate_hz!r})")
    if not 1 <= rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"profile rate_hz must be between 1 and {MAX_RATE_HZ} (got {rate_hz!r})")
    return rate_hz


def _check_bool(label: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"profile option {label} must be true or false (got {value!r})")
    return value


def _check_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"profile stop_timeout_s must be > 0 (got {value!r})")
    return float(value)


def check_views(views: object) -> tuple[str, ...]:
    if isinstance(views, str) or not isinstance(views, Sequence) or not views:
        raise ValueError(
            f"profile views must be a non-empty list from {list(VIEWS)} (got {views!r})")
    bad = [v for v in views if v not in VIEWS]
    if bad or len(set(views)) != len(views):
        raise ValueError(f"profile views must be distinct names from {list(VIEWS)} (got {views!r})")
    return tuple(views)


def find_pyspy(explicit: str | Path | None = None) -> tuple[str | None, str | None]:
    """Return (path, None) for a usable py-spy, or (None, reason).

    An explicit path must exist and be executable. Otherwise look next to the
    running interpreter first (a venv's bin dir is often not on PATH), then PATH.
    """
    if explicit is not None:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path), None
        return None, f"py-spy not found at {str(path)!r} (the configured pyspy path)"
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside), None
    found = shutil.which("py-spy")
    if found:
        return found, None
    return None, (f"py-spy not found on PATH or in {str(beside.parent)!r}: "
                  "install it (pip install py-spy) or set the pyspy option")


def parse_pyspy_log(text: str) -> dict[str, Any]:
    """Extract py-spy's own report: samples, errors, lag warnings, exit reason, error lines."""
    out: dict[str, Any] = {"samples": None, "errors": None, "lag_warnings": 0,
                           "max_lag_s": 0.0, "target_exited": False, "error_lines": []}
    for line in text.splitlines():
        match = _SAMPLES_RE.search(line)
        if match:
            out["samples"], out["errors"] = int(match.group(1)), int(match.group(2))
        match = _BEHIND_RE.search(line)
        if match:
            out["lag_warnings"] += 1
            lag = float(match.group(1)) * _UNIT_S[match.group(2)]
            out["max_lag_s"] = round(max(out["max_lag_s"], lag), 6)
        if "process exited" in line or re.search(r"process \d+ ended", line):
            out["target_exited"] = True
        stripped = line.strip()
        if stripped.startswith("Error:") or stripped.startswith("Failed to"):
            out["error_lines"].append(stripped)
    return out


class ProfileCollector:
    """py-spy on the service's process tree during the measured window."""

    name = "profile"

    def __init__(self, rate_hz: int = DEFAULT_RATE_HZ, views: Sequence[str] = DEFAULT_VIEWS,
                 pyspy: str | Path | None = None, stage_map: StageMap | str | Path | None = None,
                 stop_timeout_s: float = 10.0, nonblocking: bool = False) -> None:
        self.rate_hz = check_rate(rate_hz)
        self.views = check_views(views)
        self.stop_timeout_s = _check_timeout(stop_timeout_s)
        self.pyspy = pyspy
        self.nonblocking = _check_bool("nonblocking", nonblocking)
        self.stage_map = stage_map if isinstance(stage_map, StageMap) else load_stage_map(stage_map)
        self._ctx: CollectorContext | None = None
        self._dir: Path | None = None
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._pyspy_path: str | None = None
        self._parts: list[_Part] = []
        self._seen: set[int] = set()
        self._parents: dict[int, _ParentLooks] = {}  # parents not (yet) sampled
        self._cmdlines: dict[int, str] = {}
        self._root_alive_at_end = True
        self._reason: str | None = None
        self._window: list[float] = []
        self._result: dict[str, Any] | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ProfileCollector:
        """Build from collector options (see :meth:`apply_options`); raises ValueError."""
        collector = cls()
        collector.apply_options(options)
        return collector

    def apply_options(self, options: Mapping[str, Any]) -> None:
        """Apply options: ``rate_hz``, ``views`` or ``wall`` (bool: add the wall view),
        ``pyspy`` (path), ``stage_map`` (path or bundled map name), ``nonblocking``,
        ``stop_timeout_s``. Raises ValueError naming an unknown key or a bad value."""
        unknown = set(options) - _OPTION_KEYS
        if unknown:
            raise ValueError(f"unknown profile options {sorted(unknown)} "
                             f"(allowed: {sorted(_OPTION_KEYS)})")
        if options.get("rate_hz") is not None:
            self.rate_hz = check_rate(options["rate_hz"])
        if options.get("views") is not None:
            self.views = check_views(options["views"])
        wall = options.get("wall")
        if wall is not None:
            if not isinstance(wall, bool):
                raise ValueError(f"profile option wall must be true or false (got {wall!r})")
            if wall and "wall" not in self.views:
                self.views = (*self.views, "wall")
        if options.get("pyspy") is not None:
            self.pyspy = options["pyspy"]
        if options.get("stage_map") is not None:
            self.stage_map = load_stage_map(options["stage_map"])
        if options.get("nonblocking") is not None:
            self.nonblocking = _check_bool("nonblocking", options["nonblocking"])
        if options.get("stop_timeout_s") is not None:
            self.stop_timeout_s = _check_timeout(options["stop_timeout_s"])

    def pids(self) -> list[int]:
        """Pids of the running py-spy processes (for the resources collector)."""
        return [part.proc.pid for part in list(self._parts)
                if part.proc is not None and part.poll() is None]

    def start(self, ctx: CollectorContext) -> None:
        if self._ctx is not None:
            raise RuntimeError("profile collector started twice")
        self.apply_options(ctx.options)
        self._ctx = ctx
        self._dir = ctx.run_dir / "profile"
        self._dir.mkdir(exist_ok=True)
        if ctx.service_pid is None:
            self._reason = "target is not local: there is no service process to attach py-spy to"
            return
        path, reason = find_pyspy(self.pyspy)
        if path is None:
            self._reason = reason
            return
        self._pyspy_path = path
        self._thread = threading.Thread(target=self._run, name="profile-pyspy", daemon=True)
        self._thread.start()

    def _command(self, pid: int, view: str, output: Path) -> list[str]:
        assert self._pyspy_path is not None
        cmd = [self._pyspy_path, "record", "--pid", str(pid), "--rate", str(self.rate_hz),
               "--format", "raw", "--full-filenames", "--output", str(output)]
        if view == "wall":
            cmd.append("--idle")
        if self.nonblocking or len(self.views) > 1:
            # Two py-spys that both pause a worker fail each other's ptrace (measured: a
            # third of the on-CPU samples lost as errors), so together neither pauses.
            cmd.append("--nonblocking")
        return cmd

    def _run(self) -> None:
        ctx = self._ctx
        assert ctx is not None
        if self._stop_event.wait(max(0.0, ctx.measure_start - time.time())):
            self._reason = "stopped before the measured window started: no profile"
            return
        self._window.append(time.time())
        root = ctx.service_pid
        assert root is not None
        self._cmdlines[root] = cmdline(root)
        while True:
            self._attach_new(root)
            wait = min(POLL_S, ctx.measure_end - time.time())
            if wait <= 0 or self._stop_event.wait(wait):
                break
        self._window.append(time.time())
        self._root_alive_at_end = cpu_seconds(root) is not None
        parts = [p for p in self._parts if p.proc is not None]
        for part in parts:
            if part.proc is not None and part.poll() is None:
                part.proc.send_signal(signal.SIGINT)
                part.interrupted = True
        deadline = time.monotonic() + self.stop_timeout_s
        for part in parts:
            if part.wait(max(0.1, deadline - time.monotonic())) is None:
                assert part.proc is not None
                part.proc.kill()
                part.wait(5.0)
                part.forced = True

    def _attach_new(self, root: int) -> None:
        """Start py-spy on every process of the tree that is worth sampling and has none yet.

        A process is sampled when it has no children (a gunicorn or uvicorn worker; the
        service itself when it is a single process) or when it used >= BUSY_SHARE of a
        core over two looks in a row (a parent that serves requests itself). An idle
        parent, such as gunicorn's master, costs py-spy as much per sample as a worker
        and shows nothing, so it is skipped and status.json says so.
        """
        tree = descendants(root)
        if tree is None:
            return  # the service is gone: its py-spys notice by themselves
        now = time.monotonic()
        parents = set(tree.values())
        for pid in (root, *tree):
            if pid in self._seen:
                continue
            if pid in parents:
                looks = self._parents.setdefault(pid, _ParentLooks())
                # two busy looks in a row: a master that just forked its workers is not busy
                if not looks.busy_twice(now, cpu_seconds(pid)):
                    continue
                del self._parents[pid]
            self._seen.add(pid)
            chain = [pid]
            while chain[0] != root and chain[0] in tree:
                chain.insert(0, tree[chain[0]])
            for c in chain:
                if c not in self._cmdlines:
                    self._cmdlines[c] = cmdline(c)
            for view in self.views:
                self._spawn(view, pid, chain)

    def _spawn(self, view: str, pid: int, chain: list[int]) -> None:
        pdir = self._dir
        assert pdir is not None
        parts_dir = pdir / "parts"
        parts_dir.mkdir(exist_ok=True)
        part = _Part(view=view, pid=pid, chain=chain, output=parts_dir / f"{view}.{pid}.collapsed",
                     log=parts_dir / f"{view}.{pid}.log", started=time.time(),
                     born=started_at(pid))
        part.cmd = self._command(pid, view, part.output)
        log = part.log.open("wb")
        try:
            part.proc = subprocess.Popen(part.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        except OSError as exc:
            part.error = f"could not start py-spy: {exc}"
        finally:
            log.close()
        # Copy-and-swap: pids() reads this list from the resources sampler thread.
        self._parts = [*self._parts, part]

    def stop(self) -> dict[str, Any]:
        if self._result is not None:
            return dict(self._result)
        try:
            self._result = self._finish()
        except Exception as exc:  # stop() must never take the run down with it
            self._result = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        return dict(self._result)

    def _read_part(self, part: _Part) -> list[Stack]:
        text = part.log.read_text(encoding="utf-8", errors="replace") if part.log.exists() else ""
        info = parse_pyspy_log(text)
        if part.error:
            info["error_lines"].append(part.error)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        info["last_line"] = lines[-1] if lines else None
        info["returncode"] = part.proc.returncode if part.proc is not None else None
        info["killed_after_timeout"] = part.forced
        info["written"] = part.output.exists()
        # py-spy says "Sampling process ..." once attached; a process that is gone and
        # never had that line ended between the collector's look and py-spy's attach
        info["attached"] = "Sampling process" in text
        info["gone"] = part.born is None or started_at(part.pid) != part.born
        stacks: list[Stack] = []
        raw = part.output.read_text(encoding="utf-8", errors="replace") \
            if info["written"] else ""
        try:
            stacks = parse_collapsed(raw)
        except ValueError as exc:  # a py-spy killed mid-write leaves a torn file
            info["written"] = False
            info["error_lines"].append(f"unreadable output: {exc}")
        info["collapsed_samples"] = sum(s.count for s in stacks)
        # --nonblocking reads that found no stack: in py-spy's count, not in the stacks
        info["empty_samples"] = empty_samples(raw) if info["written"] else 0
        part.info, part.text = info, text
        prefix = [process_frame(c, self._cmdlines.get(c, f"pid {c}")) for c in part.chain]
        return [Stack((*prefix, *s.frames), s.count) for s in stacks]

    def _finish(self) -> dict[str, Any]:
        if self._ctx is None or self._dir is None:
            return {"ok": False, "reason": "stop() called before start()"}
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=self.stop_timeout_s + 5.0)
        pdir = self._dir
        stacks: dict[str, list[Stack]] = {view: [] for view in self.views}
        for part in self._parts:
            stacks[part.view] += self._read_part(part)
        log = [f"== {p.view} pid {p.pid}: {' '.join(p.cmd)}\n{p.text}" for p in self._parts]
        if log:
            (pdir / "py-spy.log").write_text("\n".join(log), encoding="utf-8")
        per_view = {view: _view_info([p for p in self._parts if p.view == view])
                    for view in self.views} if self._parts else {}
        written = [v for v in self.views if per_view.get(v, {}).get("written")]
        for view in written:
            write_collapsed(pdir / f"{view}.collapsed", stacks[view])
            doc = to_speedscope({view: stacks[view]}, name=f"{view} profile ({self.rate_hz} Hz)")
            _write_json(pdir / f"{view}.speedscope.json", doc)
        if written:
            _write_json(pdir / "stages.json",
                        build_stages({v: stacks[v] for v in written}, self.stage_map))
        shutil.rmtree(pdir / "parts", ignore_errors=True)
        reason = self._reason or _failure_reason(per_view, self._parts)
        if self._reason is None and not self._parts and len(self._window) == 2:
            reason = "no process of the service was found to sample"
        ok = bool(self._parts) and len(written) == len(self.views) and self._reason is None
        primary = per_view.get(self.views[0], {})
        exited = len(self._window) == 2 and not self._root_alive_at_end
        first = next((p for p in self._parts if p.view == self.views[0]), None)
        status: dict[str, Any] = {
            "ok": ok,
            "reason": None if ok else reason,
            "samples": primary.get("collapsed_samples", 0),
            "errors": sum(v.get("errors") or 0 for v in per_view.values()),
            "rate_hz": self.rate_hz,
            "nonblocking": self.nonblocking or len(self.views) > 1,
            "views": written,
            "requested_views": list(self.views),
            "command": first.cmd if first is not None else [],
            "processes": self._process_rows(),
            "cpu_s": _cpu_total(self._parts),
            "window": {"start": self._window[0], "end": self._window[1]}
            if len(self._window) == 2 else None,
            "lag_warnings": sum(v["lag_warnings"] for v in per_view.values()),
            "max_lag_s": max((v["max_lag_s"] for v in per_view.values()), default=0.0),
            "target_exited": exited,
            "by_view": per_view,
            "stage_map": self.stage_map.source,
        }
        sampled = [r for r in status["processes"] if r["sampled"]]
        failed = [r for r in sampled if r.get("failed")]
        status["failed_processes"] = len(failed)
        status["missed_processes"] = sum(1 for r in sampled if r.get("missed"))
        if ok and exited:
            status["note"] = "the service exited while py-spy was sampling: the profile is partial"
        elif ok and failed:
            status["note"] = (f"py-spy wrote no profile for {len(failed)} of {len(sampled)} "
                              f"sampled processes (pid {failed[0]['pid']}: "
                              f"{failed[0]['failed']}): the profile is partial")
        _write_json(pdir / "status.json", status)
        return {k: v for k, v in status.items() if k != "by_view"}

    def _process_rows(self) -> list[dict[str, Any]]:
        """One row per process of the service seen: sampled (with its counts) or why not."""
        rows: dict[int, dict[str, Any]] = {}
        for part in self._parts:
            info = part.info or {}
            row = rows.setdefault(part.pid, {
                "pid": part.pid, "parent": part.chain[-2] if len(part.chain) > 1 else None,
                "command": self._cmdlines.get(part.pid), "sampled": True,
                "since": round(part.started, 3), "samples": {}, "errors": 0,
                "exited": False})
            row["samples"][part.view] = info.get("collapsed_samples", 0)
            if part.cpu_s is not None:
                row["cpu_s"] = round(row.get("cpu_s", 0.0) + part.cpu_s, 3)
            row["errors"] += info.get("errors") or 0
            row["exited"] = row["exited"] or bool(info.get("target_exited"))
            if not info.get("written"):
                missed = _missed(part)
                if missed:
                    row["exited"] = row["exited"] or missed == MISSED_GONE
                    row["missed"] = missed
                else:
                    row["failed"] = _part_failure(part)
        for pid, looks in self._parents.items():
            if pid not in rows:
                share = looks.max_share
                rows[pid] = {"pid": pid, "command": self._cmdlines.get(pid), "sampled": False,
                             "why": f"a parent process that used at most {100 * share:.1f} % "
                                    f"of a core between looks (not >= {100 * BUSY_SHARE:g} % "
                                    "twice in a row): not sampled"}
        return sorted(rows.values(), key=lambda r: r["pid"])


@dataclass
class _ParentLooks:
    """What the collector's looks at a parent process found: is it busy enough to sample?"""

    last: tuple[float, float] | None = None  # (monotonic time, CPU seconds) of the last look
    busy_before: bool = False
    max_share: float = 0.0  # the largest share of a core seen between two looks

    def busy_twice(self, now: float, used: float | None) -> bool:
        """Record a look; True when this and the previous interval both used >= BUSY_SHARE."""
        last, self.last = self.last, (now, used or 0.0)
        share = None if last is None or used is None or now <= last[0] \
            else (used - last[1]) / (now - last[0])
        self.max_share = max(self.max_share, share or 0.0)
        busy = share is not None and share >= BUSY_SHARE
        twice, self.busy_before = busy and self.busy_before, busy
        return twice


@dataclass
class _Part:
    """One py-spy on one process for one view."""

    view: str
    pid: int
    chain: list[int]  # the service's root pid .. this pid
    output: Path
    log: Path
    started: float
    born: float | None = None  # the process's start time when py-spy was started on it
    cmd: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    error: str | None = None
    forced: bool = False
    interrupted: bool = False  # sent SIGINT at the end of the window
    info: dict[str, Any] | None = None
    text: str = ""
    cpu_s: float | None = None  # py-spy's own CPU time, from its rusage when reaped
    lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self) -> int | None:
        """Reap py-spy if it has exited (keeping its CPU time); its exit code or None.

        ``os.wait4`` rather than Popen.poll: it returns the child's rusage, so the run
        can say exactly what the profiler cost. pids() polls from the resources sampler's
        thread while the collector's thread waits, hence the lock.
        """
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        with self.lock:
            if proc.returncode is not None:
                return proc.returncode
            try:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: no rusage
                return proc.poll()
            if pid == 0:
                return None
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
            return proc.returncode

    def wait(self, timeout_s: float) -> int | None:
        """poll() until py-spy exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.poll()
            if code is not None or time.monotonic() >= deadline:
                return code
            time.sleep(0.02)


def _cpu_total(parts: Sequence[_Part]) -> float | None:
    """py-spy's CPU seconds, all processes and views; None when one could not be measured."""
    started = [p for p in parts if p.proc is not None]
    if not started or any(p.cpu_s is None for p in started):
        return None
    return round(sum(p.cpu_s or 0.0 for p in started), 3)


def _view_info(parts: list[_Part]) -> dict[str, Any]:
    """One view's py-spy reports summed over its processes."""
    infos = [p.info or {} for p in parts]
    return {
        "processes": len(parts),
        "written": any(i.get("written") for i in infos),
        "samples": sum(i.get("samples") or 0 for i in infos),
        "collapsed_samples": sum(i.get("collapsed_samples") or 0 for i in infos),
        "empty_samples": sum(i.get("empty_samples") or 0 for i in infos),
        "errors": sum(i.get("errors") or 0 for i in infos),
        "lag_warnings": sum(i.get("lag_warnings") or 0 for i in infos),
        "max_lag_s": max((i.get("max_lag_s") or 0.0 for i in infos), default=0.0),
        "processes_exited": sum(1 for i in infos if i.get("target_exited")),
        "killed_after_timeout": sum(1 for p in parts if p.forced),
    }


MISSED_GONE = "exited before py-spy attached (a short-lived process: not in the profile)"
MISSED_WINDOW_END = "the measured window ended while py-spy was attaching"


def _missed(part: _Part) -> str | None:
    """Why py-spy wrote nothing though nothing failed; None when that is a failure.

    Two races that are not failures of the profiler: the process ended between the
    collector's look and py-spy's attach (a worker recycled by gunicorn --max-requests,
    a short-lived helper), or the measured window ended while py-spy was still attaching
    (it was started on a new process moments before the end). A process that is still
    running, or one py-spy had attached to, without a profile is a failure.
    """
    info = part.info or {}
    if info.get("written") or info.get("attached") or part.forced or part.error:
        return None
    if info.get("gone"):
        return MISSED_GONE
    if part.interrupted and info.get("returncode") == -signal.SIGINT:
        return MISSED_WINDOW_END
    return None


def _part_failure(part: _Part) -> str:
    info = part.info or {}
    if info.get("error_lines"):
        return str(info["error_lines"][-1])
    if part.forced:
        return "did not exit after SIGINT and was killed: no output written"
    last = f" (last output: {info['last_line']})" if info.get("last_line") else ""
    return f"exited with code {info.get('returncode')} and wrote no output{last}"


def _failure_reason(per_view: Mapping[str, Mapping[str, Any]],
                    parts: Sequence[_Part]) -> str | None:
    for view, info in per_view.items():
        if info["written"]:
            continue
        failed = next((p for p in parts if p.view == view), None)
        if failed is None:
            return f"py-spy ({view}) was not started"
        return f"py-spy ({view}): {_missed(failed) or _part_failure(failed)}"
    return None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
