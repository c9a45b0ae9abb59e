"""The worker role of the load driver: a Locust worker that records and ships intervals.

Two kinds of worker run this code:

- **local**: started by the master on its own machine (``--parent-pid``, ``--clock-anchor``:
  it reads the master's clock exactly, and exits when the master process is gone);
- **remote**: ``harness worker --master HOST:PORT`` on another host. It joins with
  :func:`harness.load.handshake.join` (versions checked, the locustfile shipped when the
  worker has none, its clock moved to the master's), then connects as a Locust worker.

Both then run the one loop of harness/load/runloop.py: the master sends the plan
(``harness_config``), the worker records its users' requests into a LatencyRecorder and
ships closed intervals in Locust's periodic report; on ``harness_stop`` it stops its users
and answers ``harness_final`` (its last intervals, window counts, and its clock checks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import gevent
import locust
from locust import User
from locust.env import Environment

from harness import __version__
from harness.load import handshake
from harness.load.calibrate import calibrate, with_connections
from harness.load.config import ConfigError
from harness.load.locustfile import (
    apply_request_timeout,
    fire_init,
    load_user_classes,
    locust_options,
)
from harness.load.pacing import OpenModelPacer
from harness.load.recorder import LatencyRecorder
from harness.load.runloop import (
    EXIT_OK,
    Plan,
    StartError,
    StopSignal,
    install_recording,
    stop_users,
    wait_for_end,
)
from harness.rundir import clock

__all__ = ["MASTER_STOP", "WorkerRole", "run_worker"]

MASTER_STOP = "harness_stop"  # the worker's stop reason when the master ends the load
#: a remote worker simulating a host whose wall clock is off by this many seconds (tests,
#: and trying the clock correction out): its clock is moved before it joins
SKEW_ENV = "HARNESS_WORKER_CLOCK_SKEW_S"


class WorkerRole:
    """The harness side of one Locust worker: records its users' requests and ships closed
    intervals in Locust's periodic report; stops when the master says (or on a signal, or
    when its parent driver is gone)."""

    def __init__(self, env: Environment, classes: list[type[User]], stop: StopSignal,
                 parent_pid: int | None) -> None:
        self.env = env
        assert env.runner is not None, "the worker runner is created before WorkerRole"
        self.runner = env.runner
        self.classes = classes
        self.stop = stop
        self.parent_pid = parent_pid
        self.rec: LatencyRecorder | None = None
        self.pacer: OpenModelPacer | None = None
        self.overhead: dict[str, Any] | None = None  # the client path's own time
        self.master_end: float | None = None
        self.stopped = False
        self.clock: dict[str, Any] = {}  # what join measured; checks during the run added
        self.checks: list[handshake.ClockSample] = []

    def on_config(self, environment: Any, msg: Any, **kw: Any) -> None:
        plan = Plan.from_message(msg.data)
        rec = LatencyRecorder(plan.load_start, plan.interval_s, measure_start=plan.measure_start,
                              open_model=plan.open_model)
        self.pacer = install_recording(self.env, self.classes, plan, rec)
        self.rec = rec

    def on_report(self, client_id: str, data: dict[str, Any], **kw: Any) -> None:
        if self.rec is not None and not self.stopped:
            self.rec.tick(clock.now())
            data["harness"] = self.rec.take_encoded()

    def on_stop(self, environment: Any = None, msg: Any = None, **kw: Any) -> None:
        self.master_end = msg.data["end"] if msg is not None else None
        self.stop.request(MASTER_STOP)

    def on_pong(self, environment: Any = None, msg: Any = None, **kw: Any) -> None:
        self.checks.append(handshake.sample_from_pong(msg.data, clock.now()))

    def check_clock(self) -> None:
        """Every CHECK_EVERY_S: ask the master's time again (the answer: on_pong)."""
        while not self.stopped:
            self.runner.send_message("harness_ping", {"t0": clock.now()})
            gevent.sleep(handshake.CHECK_EVERY_S)

    def start_users(self) -> None:
        """The master starts them (Locust's spawn messages)."""

    def wait_s(self, now: float) -> float:
        return 1.0

    def tick(self, now: float) -> None:
        pass

    def orphaned(self) -> bool:
        """A local worker outliving its driver (the master process is gone)."""
        return bool(self.parent_pid) and os.getppid() != self.parent_pid

    def ended(self, now: float) -> str | None:
        if self.orphaned():
            return "the driver is gone"
        if not len(self.runner.greenlet):
            return "the master quit"  # Locust's quit message ended the runner
        return None

    def clock_report(self) -> dict[str, Any]:
        """The clock at connect and what the checks during the run found (run.json)."""
        out = dict(self.clock)
        best = handshake.best_sample(self.checks)
        out["checks"] = len(self.checks)
        if best is not None:  # after the correction: what is left, within best.rtt / 2
            out["run_offset_ms"] = round(best.offset_s * 1e3, 3)
            out["run_rtt_ms"] = round(best.rtt_s * 1e3, 3)
        return out

    def finish(self, end: float) -> dict[str, int] | None:
        """Stop the users, close the last interval and send it as ``harness_final``."""
        if self.stopped or self.rec is None or not len(self.runner.greenlet):
            return None
        end = self.master_end if self.master_end is not None else end
        window = stop_users(self.env, self.rec, self.pacer, end)
        self.stopped = True
        total = self.rec.service_total
        self.runner.send_message("harness_final", {
            "report": self.rec.take_encoded(), "window": window,
            "service_total": total.report() if total is not None else None,
            "client_overhead": with_connections(self.overhead, self.rec.connections),
            "clock": self.clock_report()})
        return window

    def report(self) -> dict[str, Any]:
        return {}


def _given_inputs(args: argparse.Namespace) -> tuple[str | None, list[str], float | None]:
    """(locustfile, locust_args, request timeout) given on the command line or in
    ``--run-dir``'s driver.json; the master's welcome fills in what is missing."""
    if args.locustfile is None and args.run_dir:
        try:
            given = json.loads((Path(args.run_dir) / "driver.json").read_text())
            os.environ.setdefault("SCENARIO_SEED", str(given.get("seed", 1)))
            return (given["locustfile"], list(given.get("locust_args") or []),
                    float(given.get("request_timeout_s", 10.0)))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--run-dir must hold a driver.json naming the locustfile "
                              f"(got {args.run_dir!r}: {exc})") from None
    if args.master_port is None:
        raise ConfigError("a worker needs --master-port (harness worker --master HOST:PORT)")
    return args.locustfile, [], None


def _shipped(locustfile: dict[str, str]) -> str:
    """Write the locustfile the master sent into a directory of this worker's; its path."""
    name = os.path.basename(str(locustfile.get("filename") or "locustfile.py"))
    if not re.fullmatch(r"[\w.-]{1,200}\.py", name):
        name = "locustfile.py"
    path = Path(tempfile.mkdtemp(prefix="harness-worker-")) / name
    path.write_text(str(locustfile["contents"]), encoding="utf-8")
    return str(path)


def _join(args: argparse.Namespace, locustfile: str | None) -> handshake.Welcome:
    """Hello to the master; a remote worker (no --clock-anchor) moves to its clock."""
    remote = args.clock_anchor is None
    skew = float(os.environ.get(SKEW_ENV, "0") or 0) if remote else 0.0
    if skew:
        clock.adopt(clock.offset() + skew)
    try:
        welcome = handshake.join(args.master_host, args.master_port,
                                 has_locustfile=locustfile is not None,
                                 timeout_s=args.connect_timeout)
    except handshake.Refused as exc:
        raise ConfigError(f"refused by the master: {exc}") from None
    except handshake.NoAnswer as exc:
        raise StartError(str(exc)) from None
    if remote and welcome.clock is not None:
        clock.adopt(clock.offset() + welcome.clock.offset_s)
    return welcome


def _clock_info(welcome: handshake.Welcome, remote: bool) -> dict[str, Any]:
    sample = welcome.clock
    return {"host": socket.gethostname(), "pid": os.getpid(), "remote": remote,
            "harness": __version__, "locust": locust.__version__,
            "offset_ms": round(sample.offset_s * 1e3, 3) if sample else None,
            "rtt_ms": round(sample.rtt_s * 1e3, 3) if sample else None,
            "corrected": remote}


def run_worker(args: argparse.Namespace) -> int:
    locustfile, locust_args, timeout_s = _given_inputs(args)
    welcome = _join(args, locustfile)
    if locustfile is None:
        if not welcome.locustfile:
            raise ConfigError("the master sent no locustfile; give one with --locustfile")
        locustfile = _shipped(welcome.locustfile)
    os.environ.setdefault("SCENARIO_SEED", str(welcome.seed))
    classes, _shape = load_user_classes(locustfile)
    apply_request_timeout(classes, float(timeout_s or welcome.request_timeout_s))
    env = Environment(user_classes=classes, events=locust.events,
                      parsed_options=locust_options(locust_args or welcome.locust_args))
    try:
        runner = env.create_worker_runner(args.master_host, args.master_port)
    except (Exception, SystemExit) as exc:
        raise StartError(f"worker could not connect to {args.master_host}:{args.master_port} "
                         f"({type(exc).__name__})") from None
    fire_init(env)
    stop = StopSignal()
    role = WorkerRole(env, classes, stop, args.parent_pid)
    role.clock = _clock_info(welcome, remote=args.clock_anchor is None)
    runner.register_message("harness_config", role.on_config)
    runner.register_message("harness_stop", role.on_stop, concurrent=True)
    runner.register_message("harness_pong", role.on_pong)
    env.events.report_to_master.add_listener(role.on_report)
    role.overhead = calibrate(classes)  # before it tells the master it is ready
    runner.send_message("harness_ready", role.clock)
    checker = gevent.spawn(role.check_clock)
    reason = wait_for_end(role, stop, deadline=None)
    role.finish(clock.now())
    checker.kill(block=False)
    if reason == MASTER_STOP:
        # the master sends quit once it has every final report; wait for it, as before
        while len(runner.greenlet) and stop.signalled is None and not role.orphaned():
            gevent.sleep(0.2)
    if len(runner.greenlet):
        runner.quit()
    return EXIT_OK
