"""py-spy processes for the profile collector: finding py-spy, running one per sampled
process and view, reaping it with its CPU cost, and reading what it wrote.

One :class:`PySpyRun` is one ``py-spy record --pid PID --format raw`` for one view
(``oncpu``, or ``wall`` with ``--idle``). Its raw output is collapsed stacks
(harness/rundir/stacks.py); its log (stdout and stderr) holds py-spy's own report,
which :func:`parse_pyspy_log` reads: samples, errors, lag warnings, exit reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.run.collectors.proctree import started_at
from harness.run.collectors.profilecpu import Clock
from harness.rundir.stacks import Frame, Stack, empty_samples, parse_collapsed

__all__ = ["PySpyRun", "cpu_total", "find_pyspy", "parse_pyspy_log", "pyspy_command",
           "read_output", "spawn"]

_SAMPLES_RE = re.compile(r"Samples: (\d+) Errors: (\d+)")
_BEHIND_RE = re.compile(r"([\d.]+)\s*(ns|µs|us|ms|s) behind in sampling")
_UNIT_S = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


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


def pyspy_command(pyspy: str, pid: int, view: str, output: Path, *, rate_hz: int,
                  nonblocking: bool) -> list[str]:
    cmd = [pyspy, "record", "--pid", str(pid), "--rate", str(rate_hz),
           "--format", "raw", "--full-filenames", "--output", str(output)]
    if view == "wall":
        cmd.append("--idle")
    if nonblocking:
        cmd.append("--nonblocking")
    return cmd


@dataclass
class PySpyRun:
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
    #: the sampled process's CPU and run-queue seconds before py-spy started and after it
    #: exited (so every sample falls inside the span)
    clock_start: Clock | None = None
    clock_end: Clock | None = None
    #: py-spy's own (run s, run-queue s) at the end of the window (schedstat)
    busy_s: float | None = None
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


def spawn(parts_dir: Path, view: str, pid: int, chain: list[int],
          command: list[str]) -> PySpyRun:
    """Start py-spy on ``pid`` (``command`` writes to ``parts_dir/VIEW.PID.collapsed``)."""
    parts_dir.mkdir(exist_ok=True)
    run = PySpyRun(view=view, pid=pid, chain=chain,
                   output=parts_dir / f"{view}.{pid}.collapsed",
                   log=parts_dir / f"{view}.{pid}.log", started=time.time(),
                   born=started_at(pid), cmd=command)
    log = run.log.open("wb")
    try:
        run.proc = subprocess.Popen(run.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
    except OSError as exc:
        run.error = f"could not start py-spy: {exc}"
    finally:
        log.close()
    return run


def read_output(run: PySpyRun, prefix: Sequence[Frame]) -> list[Stack]:
    """The stacks py-spy wrote, under ``prefix`` (the process frames); fills ``run.info``
    (py-spy's report and what the collector knows: written, attached, gone) and ``run.text``."""
    text = run.log.read_text(encoding="utf-8", errors="replace") if run.log.exists() else ""
    info = parse_pyspy_log(text)
    if run.error:
        info["error_lines"].append(run.error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    info["last_line"] = lines[-1] if lines else None
    info["returncode"] = run.proc.returncode if run.proc is not None else None
    info["killed_after_timeout"] = run.forced
    info["written"] = run.output.exists()
    # py-spy says "Sampling process ..." once attached; a process that is gone and
    # never had that line ended between the collector's look and py-spy's attach
    info["attached"] = "Sampling process" in text
    info["gone"] = run.born is None or started_at(run.pid) != run.born
    stacks: list[Stack] = []
    raw = run.output.read_text(encoding="utf-8", errors="replace") if info["written"] else ""
    try:
        stacks = parse_collapsed(raw)
    except ValueError as exc:  # a py-spy killed mid-write leaves a torn file
        info["written"] = False
        info["error_lines"].append(f"unreadable output: {exc}")
    info["collapsed_samples"] = sum(s.count for s in stacks)
    # --nonblocking reads that found no stack: in py-spy's count, not in the stacks
    info["empty_samples"] = empty_samples(raw) if info["written"] else 0
    run.info, run.text = info, text
    return [Stack((*prefix, *s.frames), s.count) for s in stacks]


def cpu_total(runs: Sequence[PySpyRun]) -> float | None:
    """py-spy's CPU seconds, all processes and views; None when one could not be measured."""
    started = [r for r in runs if r.proc is not None]
    if not started or any(r.cpu_s is None for r in started):
        return None
    return round(sum(r.cpu_s or 0.0 for r in started), 3)
