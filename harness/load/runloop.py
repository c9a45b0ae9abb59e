"""The driver's run loop, one for its three roles (local, master, worker).

Every role runs the same sequence, and differs only in what its :class:`Role` does:

1. a :class:`Plan` fixes the timeline (``load_start``, ``measure_start``, ``load_end``) and
   the process's share of the schedule (open model: its rate and seed);
2. a process that runs users (local, worker) installs its recording with
   :func:`install_recording`: recorder, open-model pacer, request hook;
3. :func:`wait_for_end` ticks the role until the planned end, a stop signal, or an end of
   the role's own (a load shape that ended, the master's stop);
4. ``role.finish(end)`` stops the users (or has the workers stop theirs) and returns the
   open-model window counts;
5. the local and master roles then write load.json and emit ``done``
   (:func:`run_users` is steps 3-5 for them).

Stdout carries JSON lines for the orchestrator (:class:`Emitter`); SIGTERM and SIGINT
become a :class:`StopSignal`. See docs/load-driver.md.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import gevent
from gevent.event import Event
from locust.env import Environment
from locust.runners import STATE_STOPPED

from harness.load.calibrate import with_connections
from harness.load.config import DriverConfig, rate_function
from harness.load.hooks import RequestHook
from harness.load.pacing import ArrivalSchedule, OpenModelPacer
from harness.load.recorder import LatencyRecorder
from harness.load.servicetotal import ServiceTotal
from harness.load.tracecontext import TraceContext
from harness.rundir import clock
from harness.rundir.atomic import write_text_atomic
from harness.rundir.records.load import achieved_count

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_START", "EXIT_WRITE", "SHAPE_ENDED", "Emitter",
           "Plan", "Role", "StartError", "StopSignal", "install_recording", "load_summary",
           "run_users", "shape_ended", "start_users", "stop_users", "wait_for_end",
           "write_load_json"]

EXIT_OK, EXIT_INVALID, EXIT_START = 0, 2, 3
EXIT_WRITE = 4  # the run directory could not be written (a full disk): the load stopped
SHAPE_ENDED = "load shape ended"


class StartError(RuntimeError):
    """The load could not start (master port busy, workers did not connect)."""


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


#: the signals that stop the load (the orchestrator treats the same ones alike)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))
PARENT_GONE = "the harness is gone"


class StopSignal:
    """SIGTERM, SIGINT, SIGHUP, SIGQUIT (or a role's own reason, :meth:`request`) -> an
    Event the loop waits on; also the end of ``parent_pid`` (the orchestrator that started
    this driver): a driver never loads on for nobody.

    ``reason`` is the first reason given; ``signalled`` the signal's name once one came.
    """

    def __init__(self, parent_pid: int | None = None) -> None:
        self.event = Event()
        self.reason: str | None = None
        self.signalled: str | None = None
        self.parent_pid = parent_pid
        for sig in STOP_SIGNALS:
            gevent.signal_handler(sig, self._on_signal, sig)

    def orphaned(self) -> bool:
        """The process that started this one (``parent_pid``) is gone."""
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _on_signal(self, sig: int) -> None:
        self.signalled = signal.Signals(sig).name
        self.request(self.signalled)

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


@dataclass(frozen=True)
class Plan:
    """One process's part of the run: the timeline and its share of the schedule.

    The master sends each worker its plan as the ``harness_config`` message
    (:meth:`to_message`); in the open model a worker takes ``rate / N`` and ``seed + index``.
    """

    model: str
    arrival: str
    rate: float | None
    seed: int
    load_start: float
    measure_start: float
    load_end: float
    interval_s: float
    tag_keys: tuple[str, ...]
    late_threshold_us: int
    rate_shape: str | None = None
    rate_scale: float = 1.0
    trace_sample: float | None = None
    trace_dir: str | None = None  # where traces/requests-<pid>.jsonl goes (the run directory)
    service_total: str | None = None

    @property
    def open_model(self) -> bool:
        return self.model == "open"

    @classmethod
    def starting_at(cls, load_start: float, config: DriverConfig, share: int = 0,
                    of: int = 1) -> Plan:
        """The plan of share ``share`` (from 0) of ``of`` for a load starting at ``load_start``."""
        measure_start = load_start + config.warmup_s
        return cls(model=config.model, arrival=config.arrival,
                   rate=config.rate / of if config.rate else None, seed=config.seed + share,
                   load_start=load_start, measure_start=measure_start,
                   load_end=measure_start + config.duration_s, interval_s=config.interval_s,
                   tag_keys=tuple(config.tag_keys), late_threshold_us=config.late_threshold_us,
                   rate_shape=config.rate_shape, rate_scale=1.0 / of,
                   trace_sample=config.trace_sample, trace_dir=config.run_dir,
                   service_total=config.service_total)

    def to_message(self, index: int, workers: int) -> dict[str, Any]:
        return {"index": index, "workers": workers, "model": self.model,
                "arrival": self.arrival, "rate": self.rate, "seed": self.seed,
                "rate_shape": self.rate_shape, "rate_scale": self.rate_scale,
                "load_start": self.load_start, "measure_start": self.measure_start,
                "load_end": self.load_end, "interval_s": self.interval_s,
                "tag_keys": list(self.tag_keys), "late_threshold_us": self.late_threshold_us,
                "trace_sample": self.trace_sample, "trace_dir": self.trace_dir,
                "service_total": self.service_total}

    @classmethod
    def from_message(cls, c: dict[str, Any]) -> Plan:
        return cls(model=c["model"], arrival=c["arrival"], rate=c["rate"], seed=c["seed"],
                   load_start=c["load_start"], measure_start=c["measure_start"],
                   load_end=c["load_end"], interval_s=c["interval_s"],
                   tag_keys=tuple(c["tag_keys"]), late_threshold_us=c["late_threshold_us"],
                   rate_shape=c.get("rate_shape"), rate_scale=c.get("rate_scale", 1.0),
                   trace_sample=c.get("trace_sample"), trace_dir=c.get("trace_dir"),
                   service_total=c.get("service_total"))

    def timeline(self) -> dict[str, float]:
        return {"load_start": self.load_start, "measure_start": self.measure_start,
                "planned_load_end": self.load_end}


def install_recording(env: Environment, classes: list[Any], plan: Plan,
                      rec: LatencyRecorder) -> OpenModelPacer | None:
    """Record every request of ``env`` into ``rec``; in the open model, pace the users'
    tasks by the plan's arrival schedule (returns the pacer)."""
    rec.set_load_end(plan.load_end)
    pacer = None
    if plan.open_model:
        assert plan.rate is not None
        schedule = ArrivalSchedule(plan.rate, plan.arrival, plan.seed, plan.load_start,
                                   interval_s=plan.interval_s, measure_start=plan.measure_start,
                                   rate_fn=rate_function(plan.rate_shape, plan.rate_scale))
        pacer = OpenModelPacer(schedule, rec, load_end=plan.load_end,
                               late_threshold_us=plan.late_threshold_us)
        pacer.wrap_user_classes(classes)
        rec.interval_hook = pacer.interval_counts
    traces = None
    if plan.trace_sample is not None:
        out = Path(plan.trace_dir) if plan.trace_dir and Path(plan.trace_dir).is_dir() else None
        traces = TraceContext(out, plan.trace_sample, seed=plan.seed)
    rec.traces = traces
    rec.service_total = ServiceTotal(plan.service_total)
    RequestHook(rec, tag_keys=plan.tag_keys, open_model=plan.open_model,
                traces=traces, service_total=rec.service_total).install(env.events)
    return pacer


def start_users(env: Environment, config: DriverConfig, *, background: bool = False) -> None:
    """Start the locustfile's shape, or ``users`` users (the open model spawns its pool at
    once). ``background``: in a greenlet (the master's start waits on its workers)."""
    runner = env.runner
    assert runner is not None
    if env.shape_class is not None:
        runner.start_shape()
        return
    spawn_rate = float(config.users) if config.open_model else config.spawn_rate
    if background:
        gevent.spawn(runner.start, config.users, spawn_rate)
    else:
        runner.start(config.users, spawn_rate)


def stop_users(env: Environment, rec: LatencyRecorder, pacer: OpenModelPacer | None,
               end: float) -> dict[str, int] | None:
    """Stop this process's users (waiting up to the stop grace for tasks in flight), close
    the recorder's last interval; the open-model window counts up to ``end``."""
    window = pacer.window(end) if pacer else None
    assert env.runner is not None
    env.runner.stop()
    if rec.service_total is not None:
        rec.service_total.flush()  # residuals still waiting for the decision, recorded now
    rec.finish(clock.now())
    if rec.traces is not None:
        rec.traces.flush()
    return window


def shape_ended(env: Environment, plan: Plan, now: float) -> bool:
    """A locustfile's LoadTestShape returned None: its runner stopped by itself."""
    runner = env.runner
    return (env.shape_class is not None and runner is not None
            and runner.state == STATE_STOPPED and now > plan.load_start + 1)


class Role(Protocol):
    """What one role does inside the run loop."""

    def start_users(self) -> None:
        """Start the users (local), have the workers start theirs (master)."""
        ...

    def wait_s(self, now: float) -> float:
        """How long to wait for a stop before the next tick."""
        ...

    def tick(self, now: float) -> None:
        """Periodic work: close intervals (local), write merged ones (master)."""
        ...

    def ended(self, now: float) -> str | None:
        """A reason the load ended by itself (a shape that ended), else None."""
        ...

    def finish(self, end: float) -> dict[str, int] | None:
        """Stop the users; the open-model window counts (None in the closed model)."""
        ...

    def report(self) -> dict[str, Any]:
        """What the role adds to load.json (after finish)."""
        ...


def wait_for_end(role: Role, stop: StopSignal, deadline: float | None) -> str | None:
    """Tick ``role`` until ``deadline`` (None: no deadline), a stop, or the role's own end;
    the reason it ended early, or None at the deadline."""
    while True:
        now = clock.now()
        if deadline is not None and now >= deadline:
            return None
        if stop.event.is_set():
            return stop.reason
        if stop.orphaned():
            stop.request(PARENT_GONE)
            return stop.reason
        reason = role.ended(now)
        if reason is not None:
            return reason
        stop.event.wait(role.wait_s(now))
        role.tick(clock.now())


def run_users(env: Environment, role: Role, config: DriverConfig, plan: Plan,
              rec: LatencyRecorder, emit: Emitter, stop: StopSignal,
              started: dict[str, Any]) -> dict[str, Any]:
    """Steps 3-5 for the local and master roles: emit ``started`` (plus ``started``'s keys),
    start the users, loop, stop them, write load.json, emit ``done``, quit the runner.
    Returns load.json's content."""
    emit({"type": "started", "load_start": plan.load_start, "measure_start": plan.measure_start,
          "load_end": plan.load_end, **started})
    role.start_users()
    reason = wait_for_end(role, stop, plan.load_end)
    end = min(clock.now(), plan.load_end)
    window = role.finish(end)
    load = load_summary(config, rec, window, end=end,
                        stopped_early=reason not in (None, SHAPE_ENDED), stop_reason=reason,
                        timeline=plan.timeline())
    load.update(role.report())
    write_load_json(Path(config.run_dir), load)
    emit({"type": "done", "load": load})
    assert env.runner is not None
    env.runner.quit()
    return load


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
    measured: dict[str, Any] = {"requests": m.requests, "failures": m.failures}
    if config.open_model:
        measured.update(window or {"scheduled": 0, "started": 0, "late": 0, "dropped": 0})
        measured["late_threshold_us"] = config.late_threshold_us
    # by intended start in the open model, never above the target (achieved_count)
    achieved, measured["achieved_by"] = achieved_count(
        m.requests, measured.get("started"), measured.get("scheduled"))
    measured["achieved"] = achieved
    measured["achieved_rps"] = round(achieved / span, 3) if span > 0 else None
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
        "bounds": rec.bounds(),
        "workers": max(1, config.workers), "stopped_early": stopped_early,
        "stop_reason": stop_reason, "timeline": {**timeline, "load_end": end},
        **({"traces": rec.traces.report()} if rec.traces is not None else {}),
        **({"service_total": rec.service_total.report()}
           if rec.service_total is not None else {}),
        **({"client_overhead": with_connections(rec.client_overhead, rec.connections)}
           if rec.client_overhead else {}),
    }


def write_load_json(run_dir: Path, load: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "load.json", json.dumps(load, indent=1) + "\n")
