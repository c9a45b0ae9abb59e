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

Modules: this one (options, the collector's lifecycle, its files), ``pyspy.py`` (py-spy
processes and their output), ``proctree.py`` (the tree watch: which processes to sample),
``profilestatus.py`` (status.json), ``stagemap.py`` (samples -> stages).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run.collectors import profilestatus
from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.proctree import TreeWatch, cpu_seconds
from harness.run.collectors.pyspy import (
    PySpyRun,
    find_pyspy,
    parse_pyspy_log,
    pyspy_command,
    read_output,
    spawn,
)
from harness.run.collectors.stagemap import StageMap, build_stages, load_stage_map
from harness.rundir.atomic import write_text_atomic
from harness.rundir.stacks import Stack, process_frame, to_speedscope, write_collapsed

__all__ = ["DEFAULT_RATE_HZ", "SPEC", "VIEWS", "ProfileCollector", "ProfileOptions",
           "find_pyspy", "parse_pyspy_log"]

VIEWS = ("oncpu", "wall")
DEFAULT_RATE_HZ = 20  # measured: keeps the capacity cost within 5 % (docs/collectors.md)
DEFAULT_VIEWS = ("oncpu",)
MAX_RATE_HZ = 1000
POLL_S = 0.5  # how often the service's process tree is re-read for new processes
_OPTION_KEYS = {"rate_hz", "views", "wall", "pyspy", "stage_map", "nonblocking",
                "stop_timeout_s"}


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


@dataclass(frozen=True)
class ProfileOptions:
    """Options of the profile collector; None leaves the collector's default.

    Attributes:
        rate_hz: py-spy samples per second (1-1000; default 20).
        wall: also record the wall-clock view (idle and waiting frames).
        pyspy: path of the py-spy executable (default: beside the interpreter, then PATH).
        stage_map: a stage map file or a bundled map's name (checked when built).
        views: the views, from ``oncpu`` and ``wall`` (default: oncpu, plus wall with ``wall``).
        nonblocking: run py-spy with --nonblocking (always with two views).
        stop_timeout_s: how long py-spy may take to write its output after SIGINT.
    """

    rate_hz: int | None = None
    wall: bool = False
    pyspy: str | None = None
    stage_map: str | None = None
    views: tuple[str, ...] | None = None
    nonblocking: bool | None = None
    stop_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.rate_hz is not None:
            check_rate(self.rate_hz)
        _check_bool("wall", self.wall)
        if self.views is not None:
            object.__setattr__(self, "views", check_views(self.views))
        if self.nonblocking is not None:
            _check_bool("nonblocking", self.nonblocking)
        if self.stop_timeout_s is not None:
            _check_timeout(self.stop_timeout_s)
        if self.pyspy is not None and not isinstance(self.pyspy, str):
            raise ValueError(f"profile pyspy must be a path (got {self.pyspy!r})")
        if self.stage_map is not None:
            load_stage_map(self.stage_map)  # a bad map fails now, not after the run


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
        self._runs: list[PySpyRun] = []
        self._watch: TreeWatch | None = None
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
        if wall is not None and _check_bool("wall", wall) and "wall" not in self.views:
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
        return [run.proc.pid for run in list(self._runs)
                if run.proc is not None and run.poll() is None]

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

    @property
    def _nonblocking(self) -> bool:
        # Two py-spys that both pause a worker fail each other's ptrace (measured: a
        # third of the on-CPU samples lost as errors), so together neither pauses.
        return self.nonblocking or len(self.views) > 1

    def _run(self) -> None:
        """The collector's thread: wait for the window, attach py-spy to each process worth
        sampling as it appears (every POLL_S), stop them all at the window's end."""
        ctx = self._ctx
        assert ctx is not None and ctx.service_pid is not None and self._dir is not None
        if self._stop_event.wait(max(0.0, ctx.measure_start - time.time())):
            self._reason = "stopped before the measured window started: no profile"
            return
        self._window.append(time.time())
        self._watch = watch = TreeWatch(ctx.service_pid)
        while True:
            for pid, chain in watch.look(time.monotonic()) or []:
                for view in self.views:
                    self._spawn(view, pid, chain)
            wait = min(POLL_S, ctx.measure_end - time.time())
            if wait <= 0 or self._stop_event.wait(wait):
                break
        self._window.append(time.time())
        self._root_alive_at_end = cpu_seconds(watch.root) is not None
        self._interrupt_all()

    def _spawn(self, view: str, pid: int, chain: list[int]) -> None:
        assert self._pyspy_path is not None and self._dir is not None
        parts = self._dir / "parts"
        command = pyspy_command(self._pyspy_path, pid, view, parts / f"{view}.{pid}.collapsed",
                                rate_hz=self.rate_hz, nonblocking=self._nonblocking)
        # Copy-and-swap: pids() reads this list from the resources sampler thread.
        self._runs = [*self._runs, spawn(parts, view, pid, chain, command)]

    def _interrupt_all(self) -> None:
        """SIGINT every py-spy (it writes its output then); kill those that do not exit."""
        runs = [r for r in self._runs if r.proc is not None]
        for run in runs:
            if run.proc is not None and run.poll() is None:
                run.proc.send_signal(signal.SIGINT)
                run.interrupted = True
        deadline = time.monotonic() + self.stop_timeout_s
        for run in runs:
            if run.wait(max(0.1, deadline - time.monotonic())) is None:
                assert run.proc is not None
                run.proc.kill()
                run.wait(5.0)
                run.forced = True

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
        cmdlines = self._watch.cmdlines if self._watch is not None else {}
        stacks: dict[str, list[Stack]] = {view: [] for view in self.views}
        for run in self._runs:
            prefix = [process_frame(c, cmdlines.get(c, f"pid {c}")) for c in run.chain]
            stacks[run.view] += read_output(run, prefix)
        log = [f"== {r.view} pid {r.pid}: {' '.join(r.cmd)}\n{r.text}" for r in self._runs]
        if log:
            (pdir / "py-spy.log").write_text("\n".join(log), encoding="utf-8")
        per_view = {view: profilestatus.view_info([r for r in self._runs if r.view == view])
                    for view in self.views} if self._runs else {}
        written = [v for v in self.views if per_view.get(v, {}).get("written")]
        self._write_views(pdir, {v: stacks[v] for v in written})
        status = profilestatus.status(
            views=self.views, runs=self._runs, written=written, per_view=per_view,
            rows=profilestatus.process_rows(
                self._runs, self._watch.not_sampled if self._watch else {}, cmdlines),
            window=self._window, root_alive_at_end=self._root_alive_at_end,
            reason=self._reason, rate_hz=self.rate_hz, nonblocking=self._nonblocking,
            stage_map=self.stage_map.source)
        _write_json(pdir / "status.json", status)
        return {k: v for k, v in status.items() if k != "by_view"}

    def _write_views(self, pdir: Path, stacks: dict[str, list[Stack]]) -> None:
        """VIEW.collapsed, VIEW.speedscope.json and stages.json for the views written."""
        for view, view_stacks in stacks.items():
            write_collapsed(pdir / f"{view}.collapsed", view_stacks)
            doc = to_speedscope({view: view_stacks}, name=f"{view} profile ({self.rate_hz} Hz)")
            _write_json(pdir / f"{view}.speedscope.json", doc)
        if stacks:
            _write_json(pdir / "stages.json", build_stages(stacks, self.stage_map))
        shutil.rmtree(pdir / "parts", ignore_errors=True)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                       help="profile the service with py-spy (default: on)")
    group.add_argument("--profile-rate", type=int, help="py-spy samples per second")
    group.add_argument("--profile-wall", action="store_true",
                       help="also record a wall-clock profile (idle and waiting frames)")
    group.add_argument("--stage-map", type=Path,
                       help="JSON map from functions to stages (or a bundled map's name)")
    group.add_argument("--pyspy",
                       help="path to the py-spy executable (default: the venv's, then PATH)")


def _from_args(args: argparse.Namespace) -> ProfileOptions | None:
    if not args.profile:
        return None
    return ProfileOptions(rate_hz=args.profile_rate, wall=args.profile_wall, pyspy=args.pyspy,
                          stage_map=None if args.stage_map is None else str(args.stage_map))


# At the load's start: py-spy attaches at measure_start, when the timeline is known. Its
# stop waits for every py-spy to write (stop_timeout_s, 10 s) and then converts the stacks.
# start() applies ctx.options (these options, as a mapping).
SPEC = CollectorSpec(name="profile", at="load", options=ProfileOptions,
                     create=lambda _opts, _ctx: ProfileCollector(), add_flags=_add_flags,
                     from_args=_from_args, stop_timeout_s=120.0,
                     title="profile collector (py-spy on the service)")
