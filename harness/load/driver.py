"""The load driver: Locust as a library, in its own process.

    python -m harness.load.driver RUN_DIR/driver.json            (local or master)
    python -m harness.load.driver --worker --master-host H --master-port P --run-dir D

Stdout carries only JSON lines for the orchestrator (``started``, one ``interval`` per
interval, ``done``); everything human goes to stderr. Exit codes: 0 done (also after
SIGTERM/SIGINT, with ``stopped_early``), 2 locustfile or driver config invalid (one line
on stderr), 3 could not start (master port busy, workers did not connect).
See docs/load-driver.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import gevent
import locust
from gevent.event import Event
from locust import User
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.runners import STATE_STOPPED
from locust.util.load_locustfile import load_locustfile

from harness.load.config import ConfigError, DriverConfig, load_config, rate_function
from harness.load.hooks import RequestHook
from harness.load.pacing import ArrivalSchedule, OpenModelPacer
from harness.load.recorder import LatencyRecorder
from harness.rundir.atomic import write_text_atomic

__all__ = ["LocustfileError", "StartError", "load_user_classes", "main"]

EXIT_OK, EXIT_INVALID, EXIT_START = 0, 2, 3


class LocustfileError(ValueError):
    """The locustfile cannot be used (import failed, no User class, unknown class)."""


class StartError(RuntimeError):
    """The load could not start (master port busy, workers did not connect)."""


def load_user_classes(
    locustfile: str, selected: tuple[str, ...] | list[str] = ()
) -> tuple[list[type[User]], Any]:
    """(user classes, shape instance or None) from a plain locustfile."""
    if not Path(locustfile).is_file():
        raise LocustfileError(f"locustfile must be an existing file (got {locustfile!r})")
    try:
        classes, shapes = load_locustfile(str(Path(locustfile).resolve()))
    except (Exception, SystemExit) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise LocustfileError(
            f"locustfile {locustfile} failed to import: {type(exc).__name__}: {detail}"
        ) from None
    if not classes:
        raise LocustfileError(f"locustfile {locustfile} defines no User class")
    if selected:
        missing = [name for name in selected if name not in classes]
        if missing:
            raise LocustfileError(
                f"user_classes must name User classes of the locustfile (got {missing}; "
                f"available: {sorted(classes)})"
            )
        chosen = [classes[name] for name in selected]
    else:
        chosen = list(classes.values())
    return chosen, (shapes[0] if shapes else None)


def apply_request_timeout(classes: list[type[User]], seconds: float) -> None:
    """Bound every FastHttpUser request by ``seconds`` unless its class chose a timeout.

    Locust's default is 60 s: against a target that accepts and never answers, each user
    would block for the whole of a short run and its requests would never be counted. With a
    bound they fail as timeouts, counted by type like any other error.
    """
    from locust.contrib.fasthttp import FastHttpUser

    for cls in classes:
        if not issubclass(cls, FastHttpUser):
            continue
        for attr in ("network_timeout", "connection_timeout"):
            if getattr(cls, attr) == getattr(FastHttpUser, attr):
                setattr(cls, attr, float(seconds))


def locust_options(locust_args: tuple[str, ...] | list[str]) -> argparse.Namespace:
    """Locust's options plus the locustfile's own (``events.init_command_line_parser``),
    as ``environment.parsed_options``; call after the locustfile was imported."""
    parser = get_parser(default_config_files=[])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(args=["--headless", *locust_args])
    except SystemExit:
        last = (err.getvalue().strip().splitlines() or ["invalid arguments"])[-1]
        raise ConfigError(f"locust_args must be options the locustfile or Locust accepts "
                          f"(got {list(locust_args)!r}: {last})") from None


SHAPE_ENDED = "load shape ended"


def make_environment(config: DriverConfig, classes: list[type[User]], shape: Any) -> Environment:
    """The Locust Environment, on Locust's global event hooks: a locustfile registers its
    listeners (``events.init``, ``events.test_start``...) on ``locust.events`` at import."""
    return Environment(user_classes=classes,
                       shape_class=None if config.open_model else shape,
                       host=config.host, stop_timeout=config.stop_grace_s,
                       events=locust.events,
                       parsed_options=locust_options(config.locust_args))


def fire_init(env: Environment) -> None:
    """Fire ``events.init`` as ``locust`` does after creating the runner; a locustfile that
    rejects its options there (an exception or ``sys.exit``) is an invalid locustfile."""
    try:
        env.events.init.fire(environment=env, runner=env.runner, web_ui=None)
    except SystemExit as exc:
        raise LocustfileError(f"the locustfile refused to start: {exc.code}") from None
    except Exception as exc:
        raise LocustfileError(f"the locustfile's init failed: {exc}") from None


class Emitter:
    """JSON lines on the real stdout; ``sys.stdout`` itself is pointed at stderr so that
    nothing else (a locustfile's print) can corrupt the protocol."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.out.flush()

    def interval(self, record: dict[str, Any]) -> None:
        self({"type": "interval", **record})


class StopSignal:
    """SIGTERM/SIGINT -> an Event the run loop waits on."""

    def __init__(self) -> None:
        self.event = Event()
        self.reason: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self.reason is None:
            self.reason = signal.Signals(sig).name
        self.event.set()


def load_summary(
    config: DriverConfig,
    rec: LatencyRecorder,
    window: dict[str, int] | None,
    *,
    end: float,
    stopped_early: bool,
    stop_reason: str | None,
    timeline: dict[str, float],
) -> dict[str, Any]:
    """The content of load.json (docs/internals.md)."""
    m = rec.measured
    since = rec.measured_since if rec.measured_since is not None else end
    span = max(0.0, end - since)
    measured: dict[str, Any] = {
        "requests": m.requests, "failures": m.failures,
        "achieved_rps": round(m.requests / span, 3) if span > 0 else None,
    }
    if config.open_model:
        measured.update(window or {"scheduled": 0, "started": 0, "late": 0, "dropped": 0})
        measured["late_threshold_us"] = config.late_threshold_us
    target = config.rate if config.open_model else None
    if config.open_model and window and span > 0:
        # What was asked is what the schedule held in the window: Poisson arrivals at 40/s
        # give 800 +- 28 in 20 s, and a shape's peak is not its mean. The nominal rate is
        # kept beside it.
        target = round(window["scheduled"] / span, 3)
    return {
        "model": config.model,
        "arrival": config.arrival if config.open_model else None,
        "target_rps": target,
        "nominal_rps": config.rate if config.open_model else None,
        "rate_shape": config.rate_shape,
        "users": config.users, "duration_s": config.duration_s, "warmup_s": config.warmup_s,
        "measured": measured,
        "negative_residuals": m.negative_residuals,
        "server_timing_missing": m.server_timing_missing,
        "server_timing_malformed": m.server_timing_malformed,
        "unanswered": m.unanswered, "unanswered_long": m.unanswered_long,
        "errors": dict(m.errors),
        "out_of_range": sum(s.out_of_range for s in rec.all_series()),
        "workers": max(1, config.workers), "stopped_early": stopped_early,
        "stop_reason": stop_reason, "timeline": {**timeline, "load_end": end},
    }


def write_load_json(run_dir: Path, load: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "load.json", json.dumps(load, indent=1) + "\n")


def run_local(config: DriverConfig, classes: list[type[User]], shape: Any,
              emit: Emitter, stop: StopSignal) -> int:
    """workers: 0 — users, pacing and recording in this process."""
    run_dir = Path(config.run_dir)
    env = make_environment(config, classes, shape)
    runner = env.create_local_runner()
    fire_init(env)
    load_start = time.time()
    measure_start = load_start + config.warmup_s
    load_end = measure_start + config.duration_s
    rec = LatencyRecorder(load_start, config.interval_s, measure_start=measure_start,
                          out_dir=run_dir, open_model=config.open_model,
                          on_interval=emit.interval, users=lambda: runner.user_count)
    rec.set_load_end(load_end)
    pacer = None
    if config.open_model:
        assert config.rate is not None
        schedule = ArrivalSchedule(config.rate, config.arrival, config.seed, load_start,
                                   interval_s=config.interval_s, measure_start=measure_start,
                                   rate_fn=rate_function(config.rate_shape))
        pacer = OpenModelPacer(schedule, rec, load_end=load_end,
                               late_threshold_us=config.late_threshold_us)
        pacer.wrap_user_classes(classes)
        rec.interval_hook = pacer.interval_counts
    RequestHook(rec, tag_keys=config.tag_keys, open_model=config.open_model).install(env.events)
    emit({"type": "started", "load_start": load_start, "measure_start": measure_start,
          "load_end": load_end, "workers": 0})
    if env.shape_class is not None:
        runner.start_shape()
    else:
        users = config.users
        runner.start(users, float(users) if config.open_model else config.spawn_rate)
    stop_reason = None
    while True:
        now = time.time()
        if now >= load_end:
            break
        if stop.event.is_set():
            stop_reason = stop.reason
            break
        if env.shape_class is not None and runner.state == STATE_STOPPED and now > load_start + 1:
            stop_reason = SHAPE_ENDED
            break
        stop.event.wait(max(0.0, min(rec.roll_at, load_end) - now) + 0.0005)
        rec.tick(time.time())
    end = min(time.time(), load_end)
    window = pacer.window(end) if pacer else None
    runner.stop()  # waits up to stop_grace_s for tasks in flight
    rec.finish(time.time())
    load = load_summary(config, rec, window, end=end,
                        stopped_early=stop_reason not in (None, SHAPE_ENDED),
                        stop_reason=stop_reason,
                        timeline={"load_start": load_start, "measure_start": measure_start,
                                  "planned_load_end": load_end})
    write_load_json(run_dir, load)
    emit({"type": "done", "load": load})
    runner.quit()
    return EXIT_OK


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.load.driver")
    parser.add_argument("config", nargs="?", help="driver.json (local or master role)")
    parser.add_argument("--worker", action="store_true", help="run as a worker of a master")
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=None)
    parser.add_argument("--run-dir", default=None,
                        help="worker: directory holding driver.json (for the locustfile)")
    parser.add_argument("--locustfile", default=None, help="worker: the locustfile to load")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _setup_logging()
    out = sys.stdout
    sys.stdout = sys.stderr
    from harness.load import distributed  # imported late: it is only needed by two roles

    try:
        if args.worker:
            return distributed.run_worker(args)
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
        emit = Emitter(out)
        stop = StopSignal()
        if config.workers:
            return distributed.run_master(config, classes, shape, emit, stop,
                                              config.local_workers)
        return run_local(config, classes, shape, emit, stop)
    except (ConfigError, LocustfileError) as exc:
        print(f"driver: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except StartError as exc:
        print(f"driver: could not start: {exc}", file=sys.stderr)
        return EXIT_START


if __name__ == "__main__":
    # Run the copy imported under its real name, so that harness.load.distributed and
    # this entry point share one set of classes (StartError, LocustfileError…).
    from harness.load.driver import main as _main

    sys.exit(_main())
