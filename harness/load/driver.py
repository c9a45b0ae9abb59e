"""The load driver: Locust as a library, in its own process.

    python -m harness.load.driver RUN_DIR/driver.json            (local or master)
    python -m harness.load.driver --worker --master-host H --master-port P [--locustfile F]

Stdout carries only JSON lines for the orchestrator (``started``, one ``interval`` per
interval, ``done``); everything human goes to stderr. Exit codes: 0 done (also after
SIGTERM/SIGINT/SIGHUP/SIGQUIT, with ``stopped_early``), 2 locustfile or driver config
invalid (one line on stderr), 3 could not start (master port busy, workers did not
connect), 4 the run directory could not be written (a full disk: the load stopped).
See docs/load-driver.md.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import User
from locust.env import Environment

from harness.load import distributed, resolver, worker
from harness.load.calibrate import calibrate
from harness.load.config import ConfigError, DriverConfig, load_config
from harness.load.locustfile import (
    LocustfileError,
    apply_request_timeout,
    fire_init,
    load_user_classes,
    make_environment,
)
from harness.load.pacing import OpenModelPacer
from harness.load.recorder import LatencyRecorder
from harness.load.runloop import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_START,
    EXIT_WRITE,
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
)
from harness.rundir import clock

__all__ = ["LocustfileError", "StartError", "load_user_classes", "main", "run_local"]


class LocalRole:
    """workers: 0: users, pacing and recording in this process."""

    def __init__(self, env: Environment, config: DriverConfig, plan: Plan,
                 rec: LatencyRecorder, pacer: OpenModelPacer | None) -> None:
        self.env, self.config, self.plan, self.rec, self.pacer = env, config, plan, rec, pacer

    def start_users(self) -> None:
        start_users(self.env, self.config)

    def wait_s(self, now: float) -> float:
        # wake at the next interval boundary, so each interval is written when it closes
        return max(0.0, min(self.rec.roll_at, self.plan.load_end) - now) + 0.0005

    def tick(self, now: float) -> None:
        self.rec.tick(now)

    def ended(self, now: float) -> str | None:
        return SHAPE_ENDED if shape_ended(self.env, self.plan, now) else None

    def finish(self, end: float) -> dict[str, int] | None:
        return stop_users(self.env, self.rec, self.pacer, end)

    def report(self) -> dict[str, Any]:
        return {}


def run_local(config: DriverConfig, classes: list[type[User]], shape: Any,
              emit: Emitter, stop: StopSignal) -> int:
    """workers: 0: users, pacing and recording in this process."""
    env = make_environment(config, classes, shape)
    runner = env.create_local_runner()
    fire_init(env)
    overhead = calibrate(classes, config.calibrate_requests)  # before the load's clock starts
    plan = Plan.starting_at(clock.now(), config)
    rec = LatencyRecorder(plan.load_start, config.interval_s, measure_start=plan.measure_start,
                          out_dir=Path(config.run_dir), open_model=config.open_model,
                          on_interval=emit.interval, users=lambda: runner.user_count)
    rec.client_overhead = overhead
    pacer = install_recording(env, classes, plan, rec)
    run_users(env, LocalRole(env, config, plan, rec, pacer), config, plan, rec, emit, stop,
              {"workers": 0})
    return EXIT_OK


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _dump_stacks_on_signal() -> None:
    """SIGUSR2 writes every greenlet's stack to stderr (driver.log), SIGUSR1 every thread's
    (also when the event loop itself is stuck): the orchestrator sends both to a driver
    whose load did not start in time, to show where the locustfile hangs."""
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    def greenlets() -> None:
        from gevent.util import format_run_info

        print("driver: the stacks of every greenlet (asked by the harness)", file=sys.stderr)
        print("\n".join(format_run_info()), file=sys.stderr, flush=True)

    gevent.signal_handler(signal.SIGUSR2, greenlets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.load.driver")
    parser.add_argument("config", nargs="?", help="driver.json (local or master role)")
    parser.add_argument("--worker", action="store_true", help="run as a worker of a master")
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=None)
    parser.add_argument("--run-dir", default=None,
                        help="worker: directory holding driver.json (for the locustfile)")
    parser.add_argument("--locustfile", default=None,
                        help="worker: the locustfile to load (default: the master's)")
    parser.add_argument("--connect-timeout", type=float, default=60.0,
                        help="worker: how long to wait for the master to answer (s)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clock-anchor", type=float, default=None, help=argparse.SUPPRESS)
    # how its one-line errors begin ("harness worker" when `harness worker` started it)
    parser.add_argument("--name", default="driver", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    resolver.install()  # IP literals without gevent's threadpool (harness.load.resolver)
    if args.clock_anchor is not None:
        # started by a process of this machine: stamp instants as it does (harness.rundir.clock)
        clock.adopt(args.clock_anchor)
    _setup_logging()
    _dump_stacks_on_signal()
    out = sys.stdout
    sys.stdout = sys.stderr
    emit = Emitter(out)
    try:
        if args.worker:
            return worker.run_worker(args)
        if not args.config:
            raise ConfigError("the driver needs a config path (or --worker)")
        config = load_config(args.config)
        if config.unknown_keys:
            print(f"driver: ignoring unknown config keys {list(config.unknown_keys)}",
                  file=sys.stderr)
        # Scenarios seed their traffic from SCENARIO_SEED unless told otherwise.
        os.environ.setdefault("SCENARIO_SEED", str(config.seed))
        classes, shape = load_user_classes(config.locustfile, config.user_classes)
        apply_request_timeout(classes, config.request_timeout_s)
        if config.host is None:
            hostless = [c.__name__ for c in classes if not c.host]
            if hostless:
                raise ConfigError(f"host must be set in the config or on the User class "
                                  f"(missing for {hostless})")
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        stop = StopSignal(args.parent_pid)
        if config.workers:
            return distributed.run_master(config, classes, shape, emit, stop,
                                              config.local_workers)
        return run_local(config, classes, shape, emit, stop)
    except (ConfigError, LocustfileError) as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except StartError as exc:
        print(f"{args.name}: could not start: {exc}", file=sys.stderr)
        return EXIT_START
    except OSError as exc:  # a full disk, a run directory removed under it
        _fatal(emit, f"the load stopped: the run directory cannot be written: {exc}")
        return EXIT_WRITE


def _fatal(emit: Emitter, message: str) -> None:
    """Say why the driver stops on stderr (driver.log) and through the protocol: on a full
    disk driver.log takes nothing more, the pipe to the orchestrator still does."""
    for say in (lambda: print(f"driver: {message}", file=sys.stderr, flush=True),
                lambda: emit({"type": "error", "message": message})):
        try:
            say()
        except OSError:
            continue


if __name__ == "__main__":
    sys.exit(main())
