"""The profile collector: py-spy attached to the service for the measured window.

``py-spy record --pid SERVICE --subprocesses --format raw`` samples the
gunicorn master and every worker from outside (ptrace), so the service needs no
change. One py-spy process runs per view:

- ``oncpu`` (default): py-spy's default mode, idle threads dropped: where CPU
  time goes. Not ``--gil``: sklearn/numpy release the GIL while they compute,
  and those samples are exactly the inference time we want to see.
- ``wall`` (opt-in, ``--idle``): every thread, running or waiting: where wall
  time goes. A second py-spy pauses the workers twice as often, so it costs
  throughput; see benchmarks/profiler_overhead.py and docs/collectors.md.

The collector waits in a thread until ``measure_start``, runs py-spy until
``measure_end`` or ``stop()``, stops it with SIGINT (py-spy writes its output
on SIGINT; killed after a timeout), then writes, under ``profile/``:
``VIEW.collapsed`` (py-spy's raw output), ``VIEW.speedscope.json``,
``stages.json`` (see stagemap.py), ``py-spy.log`` (py-spy's own output) and
``status.json``. When py-spy is missing or cannot attach, the run goes on and
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
from pathlib import Path
from typing import Any

from harness.collectors.base import CollectorContext
from harness.collectors.stacks import read_collapsed, to_speedscope
from harness.collectors.stagemap import StageMap, build_stages, load_stage_map

__all__ = ["DEFAULT_RATE_HZ", "VIEWS", "ProfileCollector", "find_pyspy", "parse_pyspy_log"]

VIEWS = ("oncpu", "wall")
DEFAULT_RATE_HZ = 20  # measured: keeps the capacity cost within 5 % (docs/collectors.md)
DEFAULT_VIEWS = ("oncpu",)
MAX_RATE_HZ = 1000
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
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, list[str]] = {}
        self._reason: str | None = None
        self._window: list[float] = []
        self._forced: list[str] = []
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
        return [p.pid for p in list(self._procs.values()) if p.poll() is None]

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
        for view in self.views:
            cmd = [path, "record", "--pid", str(ctx.service_pid), "--subprocesses",
                   "--rate", str(self.rate_hz), "--format", "raw", "--full-filenames",
                   "--output", str(self._dir / f"{view}.collapsed")]
            if view == "wall":
                cmd.append("--idle")
            if self.nonblocking or len(self.views) > 1:
                # Two py-spys that both pause the workers fail each other's ptrace (measured:
                # a third of the on-CPU samples lost as errors), so together neither pauses.
                cmd.append("--nonblocking")
            self._commands[view] = cmd
        self._thread = threading.Thread(target=self._run, name="profile-pyspy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ctx, pdir = self._ctx, self._dir
        assert ctx is not None and pdir is not None
        if self._stop_event.wait(max(0.0, ctx.measure_start - time.time())):
            self._reason = "stopped before the measured window started: no profile"
            return
        self._window.append(time.time())
        for view, cmd in self._commands.items():
            log = (pdir / f"py-spy.{view}.log").open("wb")
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT)
                # Copy-and-swap: pids() reads this dict from the resources sampler thread.
                self._procs = {**self._procs, view: proc}
            except OSError as exc:
                self._reason = f"could not start py-spy: {exc}"
            finally:
                log.close()
        self._stop_event.wait(max(0.0, ctx.measure_end - time.time()))
        self._window.append(time.time())
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.stop_timeout_s
        for view, proc in self._procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self._forced.append(view)

    def stop(self) -> dict[str, Any]:
        if self._result is not None:
            return dict(self._result)
        try:
            self._result = self._finish()
        except Exception as exc:  # stop() must never take the run down with it
            self._result = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        return dict(self._result)

    def _finish(self) -> dict[str, Any]:
        if self._ctx is None or self._dir is None:
            return {"ok": False, "reason": "stop() called before start()"}
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=self.stop_timeout_s + 5.0)
        pdir = self._dir
        per_view, log_parts, stacks = {}, [], {}
        for view, cmd in self._commands.items():
            part = pdir / f"py-spy.{view}.log"
            text = part.read_text(encoding="utf-8", errors="replace") if part.exists() else ""
            part.unlink(missing_ok=True)
            log_parts.append(f"== {view}: {' '.join(cmd)}\n{text}")
            info = parse_pyspy_log(text)
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            info["last_line"] = lines[-1] if lines else None
            proc = self._procs.get(view)
            info["returncode"] = proc.returncode if proc is not None else None
            info["killed_after_timeout"] = view in self._forced
            info["written"] = (pdir / f"{view}.collapsed").exists()
            try:
                stacks[view] = read_collapsed(pdir / f"{view}.collapsed")
            except ValueError as exc:  # a py-spy killed mid-write leaves a torn file
                stacks[view], info["written"] = [], False
                info["error_lines"].append(f"unreadable output: {exc}")
            info["collapsed_samples"] = sum(s.count for s in stacks[view])
            per_view[view] = info
        if log_parts:
            (pdir / "py-spy.log").write_text("\n".join(log_parts), encoding="utf-8")
        written = [v for v in self._commands if per_view[v]["written"]]
        for view in written:
            doc = to_speedscope({view: stacks[view]}, name=f"{view} profile ({self.rate_hz} Hz)")
            _write_json(pdir / f"{view}.speedscope.json", doc)
        if written:
            _write_json(pdir / "stages.json",
                        build_stages({v: stacks[v] for v in written}, self.stage_map))
        reason = self._reason or _failure_reason(per_view)
        ok = bool(self._commands) and len(written) == len(self._commands) and self._reason is None
        primary = per_view.get(self.views[0], {})
        status: dict[str, Any] = {
            "ok": ok,
            "reason": None if ok else reason,
            "samples": primary.get("collapsed_samples", 0),
            "errors": sum(v.get("errors") or 0 for v in per_view.values()),
            "rate_hz": self.rate_hz,
            "nonblocking": self.nonblocking or len(self.views) > 1,
            "views": list(written) if self._commands else [],
            "requested_views": list(self.views),
            "command": self._commands.get(self.views[0], []),
            "window": {"start": self._window[0], "end": self._window[1]}
            if len(self._window) == 2 else None,
            "lag_warnings": sum(v["lag_warnings"] for v in per_view.values()),
            "max_lag_s": max((v["max_lag_s"] for v in per_view.values()), default=0.0),
            "target_exited": any(v["target_exited"] for v in per_view.values()),
            "by_view": per_view,
            "stage_map": self.stage_map.source,
        }
        if ok and status["target_exited"]:
            status["note"] = "the service exited while py-spy was sampling: the profile is partial"
        _write_json(pdir / "status.json", status)
        return {k: v for k, v in status.items() if k != "by_view"}


def _failure_reason(per_view: Mapping[str, Mapping[str, Any]]) -> str | None:
    for view, info in per_view.items():
        if info["written"]:
            continue
        if info["error_lines"]:
            return f"py-spy ({view}): {info['error_lines'][-1]}"
        if info["killed_after_timeout"]:
            return f"py-spy ({view}) did not exit after SIGINT and was killed: no output written"
        last = f" (last output: {info['last_line']})" if info.get("last_line") else ""
        return f"py-spy ({view}) exited with code {info['returncode']} and wrote no output{last}"
    return None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
