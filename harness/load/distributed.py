"""Master and worker roles of the load driver (``workers: N``).

The master runs no users: it starts N local worker subprocesses (``local_workers`` of
them; the rest may connect from other hosts), waits until each has said
``harness_ready``, sends each its share of the run (``harness_config``: timeline,
``rate/N`` and ``seed + index`` in the open model), and merges the interval histograms
the workers attach to Locust's periodic report (``report_to_master``, every ~3 s)
exactly, by interval start. At the end it sends ``harness_stop``; each worker stops its
users, closes its last interval and answers ``harness_final``; the master writes the
remaining intervals and load.json. Both roles run the one loop of harness/load/runloop.py.

Clocks: intervals are aligned to the master's ``load_start``; workers on other hosts
must have synchronised clocks (NTP), as for any distributed latency measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gevent
import locust
from locust import User
from locust.env import Environment
from locust.runners import MasterRunner

from harness.load.calibrate import calibrate
from harness.load.config import ConfigError, DriverConfig
from harness.load.locustfile import (
    apply_request_timeout,
    fire_init,
    load_user_classes,
    locust_options,
    make_environment,
)
from harness.load.pacing import OpenModelPacer
from harness.load.recorder import LatencyRecorder
from harness.load.runloop import (
    EXIT_OK,
    SHAPE_ENDED,
    Emitter,
    Plan,
    StartError,
    StopSignal,
    install_recording,
    run_users,
    shape_ended,
    start_users,
    stop_users,
    wait_for_end,
)
from harness.rundir import clock

__all__ = ["run_master", "run_worker"]

REPORT_GRACE_S = 10.0  # > 3 worker reports (3 s apart): an interval waits this long at most
FINAL_TIMEOUT_S = 15.0
MASTER_STOP = "harness_stop"  # the worker's stop reason when the master ends the load
WINDOW_KEYS = ("scheduled", "started", "late", "dropped")


def _worker_command(config: DriverConfig, port: int) -> list[str]:
    host = config.master_host if config.master_host not in ("*", "0.0.0.0", "") else "127.0.0.1"
    return [sys.executable, "-m", "harness.load.driver", "--worker", "--master-host", host,
            "--master-port", str(port), "--locustfile", config.locustfile,
            "--parent-pid", str(os.getpid()), "--clock-anchor", repr(clock.offset())]


# -- master ----------------------------------------------------------------------------------

class MasterRole:
    """Runs no users: merges the workers' interval histograms and collects their finals."""

    def __init__(self, env: Environment, runner: MasterRunner, config: DriverConfig,
                 plan: Plan, rec: LatencyRecorder, workers: list[str]) -> None:
        self.env, self.runner, self.config, self.plan, self.rec = env, runner, config, plan, rec
        self.workers = workers
        self.finals: dict[str, dict[str, Any]] = {}
        env.events.worker_report.add_listener(self.on_report)
        runner.register_message("harness_final", self.on_final)

    def on_report(self, client_id: str, data: dict[str, Any], **kw: Any) -> None:
        if "harness" in data:
            self.rec.merge_encoded(client_id, data["harness"])

    def on_final(self, environment: Any, msg: Any, **kw: Any) -> None:
        self.finals[msg.node_id] = msg.data
        self.rec.merge_encoded(msg.node_id, msg.data["report"])

    def send_plans(self) -> None:
        n = len(self.workers)
        for i, cid in enumerate(self.workers):
            self.rec.add_source(cid)
            plan = Plan.starting_at(self.plan.load_start, self.config, share=i, of=n)
            self.runner.send_message("harness_config", plan.to_message(i, n), client_id=cid)

    def start_users(self) -> None:
        start_users(self.env, self.config, background=True)

    def wait_s(self, now: float) -> float:
        return min(1.0, max(0.0, self.plan.load_end - now))

    def tick(self, now: float) -> None:
        self.rec.flush_merged(now)

    def ended(self, now: float) -> str | None:
        return SHAPE_ENDED if shape_ended(self.env, self.plan, now) else None

    def finish(self, end: float) -> dict[str, int] | None:
        """Tell the workers to stop and wait (a bounded time) for their final reports."""
        self.runner.send_message("harness_stop", {"end": end})
        limit = clock.now() + self.config.stop_grace_s + FINAL_TIMEOUT_S
        while len(self.finals) < len(self.workers) and clock.now() < limit:
            gevent.sleep(0.05)
        self.rec.flush_merged(clock.now(), final=True)
        if not self.config.open_model:
            return None
        return {k: sum(int(f["window"][k]) for f in self.finals.values() if f.get("window"))
                for k in WINDOW_KEYS}

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workers": len(self.workers), "workers_reported": len(self.finals)}
        overheads = [f["client_overhead"] for f in self.finals.values()
                     if isinstance(f.get("client_overhead"), dict)
                     and f["client_overhead"].get("p50_us") is not None]
        if overheads:  # the slowest worker's client path: the residual's largest share
            out["client_overhead"] = max(overheads, key=lambda o: o["p50_us"])
        totals = [f["service_total"] for f in self.finals.values() if f.get("service_total")]
        if totals:
            names = {t.get("name") for t in totals}
            out["service_total"] = dict(totals[0]) if len(names) == 1 else {
                "name": None, "how": f"the workers decided differently: {sorted(map(str, names))}"
                                    "; the residual of each worker used its own decision",
                "evidence": {}, "total_missing": sum(t.get("total_missing", 0) for t in totals)}
        return out


def _listen(env: Environment, config: DriverConfig) -> MasterRunner:
    try:
        return env.create_master_runner(config.master_host, config.master_port)
    except (Exception, SystemExit) as exc:
        raise StartError(f"master could not listen on {config.master_host}:"
                         f"{config.master_port} ({type(exc).__name__}: {exc})") from None


def _wait_for_workers(runner: MasterRunner, config: DriverConfig,
                      procs: list[subprocess.Popen[bytes]], stop: StopSignal) -> list[str]:
    """The ids of the workers once all ``config.workers`` said ``harness_ready``."""
    ready: list[str] = []
    runner.register_message("harness_ready", lambda environment, msg, **kw: ready.append(
        msg.node_id))
    deadline = clock.now() + config.expect_workers_timeout_s
    while len(set(ready)) < config.workers:
        dead = [p.returncode for p in procs if p.poll() is not None]
        if dead or clock.now() > deadline or stop.event.is_set():
            for p in procs:
                p.kill()
            why = (f"a worker exited with code {dead[0]}" if dead else
                   "interrupted" if stop.event.is_set() else
                   f"{len(set(ready))} of {config.workers} workers connected within "
                   f"{config.expect_workers_timeout_s:g} s")
            raise StartError(why)
        gevent.sleep(0.05)
    return sorted(set(ready))


def run_master(config: DriverConfig, classes: list[type[User]], shape: Any,
               emit: Emitter, stop: StopSignal, local_workers: int | None = None) -> int:
    """workers: N: start ``local_workers`` (default N) worker processes, wait for N, run."""
    env = make_environment(config, classes, shape)
    runner = _listen(env, config)
    fire_init(env)
    port = runner.server.port
    n_local = config.workers if local_workers is None else local_workers
    procs = [subprocess.Popen(_worker_command(config, port), stdout=sys.stderr.fileno())
             for _ in range(n_local)]
    workers = _wait_for_workers(runner, config, procs, stop)
    # A short lead so that every worker holds its plan before the schedule starts.
    plan = Plan.starting_at(clock.now() + 0.2, config)
    rec = LatencyRecorder(plan.load_start, config.interval_s, measure_start=plan.measure_start,
                          out_dir=Path(config.run_dir), open_model=config.open_model,
                          grace_s=REPORT_GRACE_S + config.interval_s,
                          on_interval=emit.interval, users=lambda: runner.user_count)
    role = MasterRole(env, runner, config, plan, rec, workers)
    role.send_plans()
    run_users(env, role, config, plan, rec, emit, stop,
              {"workers": len(workers), "master_port": port})
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return EXIT_OK


# -- worker ----------------------------------------------------------------------------------

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
            "client_overhead": self.overhead})
        return window

    def report(self) -> dict[str, Any]:
        return {}


def _worker_inputs(args: argparse.Namespace) -> tuple[str, list[str], float]:
    """(locustfile, locust_args, request timeout) from --locustfile or --run-dir."""
    locustfile = args.locustfile
    locust_args: list[str] = []
    timeout_s = 10.0  # a worker started by hand with --locustfile: the config's default
    if locustfile is None and args.run_dir:
        try:
            given = json.loads((Path(args.run_dir) / "driver.json").read_text())
            locustfile = given["locustfile"]
            locust_args = list(given.get("locust_args") or [])
            timeout_s = float(given.get("request_timeout_s", timeout_s))
            os.environ.setdefault("SCENARIO_SEED", str(given.get("seed", 1)))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--run-dir must hold a driver.json naming the locustfile "
                              f"(got {args.run_dir!r}: {exc})") from None
    if locustfile is None or args.master_port is None:
        raise ConfigError("a worker needs --master-port and --locustfile (or --run-dir)")
    return locustfile, locust_args, timeout_s


def run_worker(args: argparse.Namespace) -> int:
    locustfile, locust_args, timeout_s = _worker_inputs(args)
    classes, _shape = load_user_classes(locustfile)
    apply_request_timeout(classes, float(timeout_s))
    env = Environment(user_classes=classes, events=locust.events,
                      parsed_options=locust_options(locust_args))
    try:
        runner = env.create_worker_runner(args.master_host, args.master_port)
    except (Exception, SystemExit) as exc:
        raise StartError(f"worker could not connect to {args.master_host}:{args.master_port} "
                         f"({type(exc).__name__})") from None
    fire_init(env)
    stop = StopSignal()
    role = WorkerRole(env, classes, stop, args.parent_pid)
    runner.register_message("harness_config", role.on_config)
    runner.register_message("harness_stop", role.on_stop, concurrent=True)
    env.events.report_to_master.add_listener(role.on_report)
    role.overhead = calibrate(classes)  # before it tells the master it is ready
    runner.send_message("harness_ready")
    reason = wait_for_end(role, stop, deadline=None)
    role.finish(clock.now())
    if reason == MASTER_STOP:
        # the master sends quit once it has every final report; wait for it, as before
        while len(runner.greenlet) and stop.signalled is None and not role.orphaned():
            gevent.sleep(0.2)
    if len(runner.greenlet):
        runner.quit()
    return EXIT_OK
