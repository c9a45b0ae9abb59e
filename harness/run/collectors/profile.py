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

- ``oncpu`` (default): idle threads dropped: where CPU time goes. Not ``--gil``:
  sklearn/numpy release the GIL while they compute, and those samples are exactly the
  inference time we want to see.
- ``wall`` (opt-in, ``--idle``): every thread, running or waiting: where wall time goes.

py-spy runs with ``--nonblocking`` by default (it reads the process's memory without
stopping it). Its default, blocking mode stops every thread at every sample and, on a
server with idle threads (MLServer: uvloop, thread pools, multiprocessing queues), counts
them as running: 368 % of a core "on-CPU" where psutil measured 20 %, and half the
throughput (BENCHMARKS.md, "py-spy: blocking or not"). ``nonblocking: false``
(``--profile-blocking``) brings it back. Every profile's status compares the on-CPU samples
of each process with the CPU the kernel measured for it (profilecpu.py).

The collector waits in a thread until ``measure_start``, runs py-spy until
``measure_end`` or ``stop()``, stops it with SIGINT (py-spy writes its output
on SIGINT; killed after a timeout), then writes, under ``profile/``:
``VIEW.collapsed`` (py-spy's raw output, all processes), ``VIEW.speedscope.json``,
``stages.json`` (see stagemap.py; the map is chosen by profilemap.py unless given),
``py-spy.log`` (py-spy's own output, per process) and ``status.json``. When py-spy is
missing or cannot attach, the run goes on and ``status.json`` says why.

Modules: this one (the collector's lifecycle, its files, its flags), ``profileoptions.py``
(its options, checked), ``pyspy.py`` (py-spy processes and their output), ``proctree.py``
(the tree watch: which processes to sample), ``profilestatus.py`` (status.json),
``profilecpu.py`` (samples vs CPU, py-spy's cost), ``profilemap.py`` (which stage map),
``stagemap.py`` (samples -> stages).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.run.collectors import profilemap, profilestatus
from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.proctree import TreeWatch, cpu_seconds
from harness.run.collectors.profilecpu import read_clock, schedstat
from harness.run.collectors.profileoptions import (
    DEFAULT_RATE_HZ,
    DEFAULT_VIEWS,
    OPTION_KEYS,
    VIEWS,
    ProfileOptions,
    check_bool,
    check_rate,
    check_timeout,
    check_views,
)
from harness.run.collectors.pyspy import (
    PySpyRun,
    find_pyspy,
    parse_pyspy_log,
    pyspy_command,
    read_output,
    spawn,
)
from harness.run.collectors.stagemap import (
    StageMap,
    build_stages,
    bundled_names,
    load_stage_map,
)
from harness.rundir.atomic import write_text_atomic
from harness.rundir.stacks import Stack, process_frame, to_speedscope, write_collapsed

__all__ = ["DEFAULT_RATE_HZ", "SPEC", "VIEWS", "ProfileCollector", "ProfileOptions",
           "find_pyspy", "parse_pyspy_log"]

POLL_S = 0.5  # how often the service's process tree is re-read for new processes


class ProfileCollector:
    """py-spy on the service's process tree during the measured window."""

    name = "profile"

    def __init__(self, rate_hz: int = DEFAULT_RATE_HZ, views: Sequence[str] = DEFAULT_VIEWS,
                 pyspy: str | Path | None = None, stage_map: StageMap | str | Path | None = None,
                 stop_timeout_s: float = 10.0, nonblocking: bool = True) -> None:
        self.rate_hz = check_rate(rate_hz)
        self.views = check_views(views)
        self.stop_timeout_s = check_timeout(stop_timeout_s)
        self.pyspy = pyspy
        self.nonblocking = check_bool("nonblocking", nonblocking)
        # None: chosen after the run (profilemap.resolve)
        self.stage_map = stage_map if isinstance(stage_map, StageMap) or stage_map is None \
            else load_stage_map(stage_map)
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
        unknown = set(options) - OPTION_KEYS
        if unknown:
            raise ValueError(f"unknown profile options {sorted(unknown)} "
                             f"(allowed: {sorted(OPTION_KEYS)})")
        if options.get("rate_hz") is not None:
            self.rate_hz = check_rate(options["rate_hz"])
        if options.get("views") is not None:
            self.views = check_views(options["views"])
        wall = options.get("wall")
        if wall is not None and check_bool("wall", wall) and "wall" not in self.views:
            self.views = (*self.views, "wall")
        if options.get("pyspy") is not None:
            self.pyspy = options["pyspy"]
        if options.get("stage_map") is not None:
            self.stage_map = load_stage_map(options["stage_map"])
        if options.get("nonblocking") is not None:
            self.nonblocking = check_bool("nonblocking", options["nonblocking"])
        if options.get("stop_timeout_s") is not None:
            self.stop_timeout_s = check_timeout(options["stop_timeout_s"])

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
        running = [(run, run.proc.pid) for run in self._runs
                   if run.proc is not None and run.poll() is None]
        for run, pyspy_pid in running:  # py-spy's busy time, while it is still there to ask
            busy = schedstat(pyspy_pid)
            run.busy_s = None if busy is None else sum(busy)
        self._interrupt_all()
        # The processes' CPU for the check, once their py-spy has exited: a py-spy on a busy
        # machine samples on until it gets a CPU to handle the SIGINT, and each of those
        # samples must fall inside the span the kernel's figures cover.
        for run, _ in running:
            run.clock_end = read_clock(run.pid)

    def _spawn(self, view: str, pid: int, chain: list[int]) -> None:
        assert self._pyspy_path is not None and self._dir is not None
        parts = self._dir / "parts"
        command = pyspy_command(self._pyspy_path, pid, view, parts / f"{view}.{pid}.collapsed",
                                rate_hz=self.rate_hz, nonblocking=self._nonblocking)
        clock = read_clock(pid)
        run = spawn(parts, view, pid, chain, command)
        run.clock_start = clock
        # Copy-and-swap: pids() reads this list from the resources sampler thread.
        self._runs = [*self._runs, run]

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
        stage_map, waiting = self._write_views(pdir, {v: stacks[v] for v in written})
        status = profilestatus.status(
            views=self.views, runs=self._runs, written=written, per_view=per_view,
            rows=profilestatus.process_rows(
                self._runs, self._watch.not_sampled if self._watch else {}, cmdlines),
            window=self._window, root_alive_at_end=self._root_alive_at_end,
            reason=self._reason, rate_hz=self.rate_hz, nonblocking=self._nonblocking,
            stage_map=stage_map, wait_leaf_share=waiting)
        _write_json(pdir / "status.json", status)
        return {k: v for k, v in status.items() if k != "by_view"}

    def _write_views(self, pdir: Path, stacks: dict[str, list[Stack]]
                     ) -> tuple[dict[str, Any], float | None]:
        """VIEW.collapsed, VIEW.speedscope.json and stages.json for the views written; the
        stage map's block for status.json (the map is chosen on the first view's stacks)
        and the share of on-CPU samples whose leaf is a waiting call."""
        for view, view_stacks in stacks.items():
            write_collapsed(pdir / f"{view}.collapsed", view_stacks)
            doc = to_speedscope({view: view_stacks}, name=f"{view} profile ({self.rate_hz} Hz)")
            _write_json(pdir / f"{view}.speedscope.json", doc)
        shutil.rmtree(pdir / "parts", ignore_errors=True)
        if not stacks:
            return profilemap.unresolved(self.stage_map), None
        ctx = self._ctx
        choice = profilemap.resolve(self.stage_map, None if ctx is None else ctx.run_dir,
                                    next(iter(stacks.values())))
        stages = build_stages(stacks, choice.smap)
        _write_json(pdir / "stages.json", {**stages, "stage_map": choice.to_dict()})
        oncpu = stages["detail"].get("oncpu")
        waiting = sum(s["waiting"] for s in oncpu["stages"].values()) if oncpu else 0
        return choice.to_dict(), round(waiting / oncpu["samples"], 4) \
            if oncpu and oncpu["samples"] else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                       help="profile the service with py-spy (default: on)")
    group.add_argument("--profile-rate", type=int, help="py-spy samples per second")
    group.add_argument("--profile-wall", action="store_true",
                       help="also record a wall-clock profile (idle and waiting frames)")
    group.add_argument("--profile-blocking", action="store_true",
                       help="py-spy's blocking mode: it stops the service at every sample "
                            "(default: --nonblocking; blocking counts idle threads of "
                            "multi-threaded servers as running; with --profile-wall both "
                            "views run non-blocking anyway)")
    group.add_argument("--stage-map", metavar="NAME|FILE",
                       help="a bundled map's name (" + ", ".join(bundled_names()) + ") or a "
                            "JSON map file (default: the served service's map, else the "
                            "bundled map that leaves the least unexplained)")
    group.add_argument("--pyspy",
                       help="path to the py-spy executable (default: the venv's, then PATH)")


def _from_args(args: argparse.Namespace) -> ProfileOptions | None:
    if not args.profile:
        return None
    return ProfileOptions(rate_hz=args.profile_rate, wall=args.profile_wall, pyspy=args.pyspy,
                          stage_map=args.stage_map,
                          nonblocking=False if args.profile_blocking else None)


# At the load's start: py-spy attaches at measure_start, when the timeline is known. Its
# stop waits for every py-spy to write (stop_timeout_s, 10 s) and then converts the stacks.
# start() applies ctx.options (these options, as a mapping).
SPEC = CollectorSpec(name="profile", at="load", options=ProfileOptions,
                     create=lambda _opts, _ctx: ProfileCollector(), add_flags=_add_flags,
                     from_args=_from_args, stop_timeout_s=120.0,
                     title="profile collector (py-spy on the service)")
