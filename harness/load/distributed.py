"""Master and worker roles of the load driver (``workers: N``).

The master runs no users: it starts N local worker subprocesses (``local_workers`` of
them; the rest may connect from other hosts), waits until each has said
``harness_ready``, sends each its share of the run (``harness_config``: timeline,
``rate/N`` and ``seed + index`` in the open model), and merges the interval histograms
the workers attach to Locust's periodic report (``report_to_master``, every ~3 s)
exactly, by interval start. At the end it sends ``harness_stop``; each worker stops its
users, closes its last interval and answers ``harness_final``; the master writes the
remaining intervals and load.json.

Clocks: intervals are aligned to the master's ``load_start``; workers on other hosts
must have synchronised clocks (NTP), as for any distributed latency measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import locust
from locust import User
from locust.env import Environment

from harness.load.config import ConfigError, DriverConfig, rate_function
from harness.load.driver import (
    EXIT_OK,
    SHAPE_ENDED,
    Emitter,
    StartError,
    StopSignal,
    apply_request_timeout,
    fire_init,
    load_summary,
    load_user_classes,
    locust_options,
    make_environment,
    write_load_json,
)
from harness.load.hooks import RequestHook
from harness.load.pacing import ArrivalSchedule, OpenModelPacer
from harness.load.recorder import LatencyRecorder

__all__ = ["run_master", "run_worker"]

REPORT_GRACE_S = 10.0  # > 3 worker reports (3 s apart): an interval waits this long at most
FINAL_TIMEOUT_S = 15.0


def _worker_command(config: DriverConfig, port: int) -> list[str]:
    host = config.master_host if config.master_host not in ("*", "0.0.0.0", "") else "127.0.0.1"
    return [sys.executable, "-m", "harness.load.driver", "--worker", "--master-host", host,
            "--master-port", str(port), "--locustfile", config.locustfile,
            "--parent-pid", str(os.getpid())]


def run_master(config: DriverConfig, classes: list[type[User]], shape: Any,
               emit: Emitter, stop: StopSignal, local_workers: int | None = None) -> int:
    run_dir = Path(config.run_dir)
    env = make_environment(config, classes, shape)
    try:
        runner = env.create_master_runner(config.master_host, config.master_port)
    except (Exception, SystemExit) as exc:
        raise StartError(f"master could not listen on {config.master_host}:"
                         f"{config.master_port} ({type(exc).__name__}: {exc})") from None
    fire_init(env)
    port = runner.server.port
    ready: list[str] = []
    finals: dict[str, dict[str, Any]] = {}
    runner.register_message("harness_ready", lambda environment, msg, **kw: ready.append(
        msg.node_id))
    n_local = config.workers if local_workers is None else local_workers
    procs = [subprocess.Popen(_worker_command(config, port), stdout=sys.stderr.fileno())
             for _ in range(n_local)]
    deadline = time.time() + config.expect_workers_timeout_s
    while len(set(ready)) < config.workers:
        dead = [p.returncode for p in procs if p.poll() is not None]
        if dead or time.time() > deadline or stop.event.is_set():
            for p in procs:
                p.kill()
            why = (f"a worker exited with code {dead[0]}" if dead else
                   "interrupted" if stop.event.is_set() else
                   f"{len(set(ready))} of {config.workers} workers connected within "
                   f"{config.expect_workers_timeout_s:g} s")
            raise StartError(why)
        gevent.sleep(0.05)
    workers = sorted(set(ready))
    # A short lead so that every worker holds its config before the schedule starts.
    load_start = time.time() + 0.2
    measure_start = load_start + config.warmup_s
    load_end = measure_start + config.duration_s
    rec = LatencyRecorder(load_start, config.interval_s, measure_start=measure_start,
                          out_dir=run_dir, open_model=config.open_model,
                          grace_s=REPORT_GRACE_S + config.interval_s,
                          on_interval=emit.interval, users=lambda: runner.user_count)

    def on_report(client_id: str, data: dict[str, Any], **kw: Any) -> None:
        if "harness" in data:
            rec.merge_encoded(client_id, data["harness"])

    def on_final(environment: Any, msg: Any, **kw: Any) -> None:
        finals[msg.node_id] = msg.data
        rec.merge_encoded(msg.node_id, msg.data["report"])

    env.events.worker_report.add_listener(on_report)
    runner.register_message("harness_final", on_final)
    n = len(workers)
    for i, cid in enumerate(workers):
        rec.add_source(cid)
        runner.send_message("harness_config", {
            "index": i, "workers": n, "model": config.model, "arrival": config.arrival,
            "rate": config.rate / n if config.rate else None, "seed": config.seed + i,
            "rate_shape": config.rate_shape, "rate_scale": 1.0 / n,
            "load_start": load_start, "measure_start": measure_start, "load_end": load_end,
            "interval_s": config.interval_s, "tag_keys": list(config.tag_keys),
            "late_threshold_us": config.late_threshold_us,
        }, client_id=cid)
    emit({"type": "started", "load_start": load_start, "measure_start": measure_start,
          "load_end": load_end, "workers": n, "master_port": port})
    spawn_rate = float(config.users) if config.open_model else config.spawn_rate
    if env.shape_class is not None:
        runner.start_shape()
    else:
        gevent.spawn(runner.start, config.users, spawn_rate)
    stop_reason = None
    while True:
        now = time.time()
        if now >= load_end:
            break
        if stop.event.is_set():
            stop_reason = stop.reason
            break
        stop.event.wait(min(1.0, max(0.0, load_end - now)))
        rec.flush_merged(time.time())
    end = min(time.time(), load_end)
    runner.send_message("harness_stop", {"end": end})
    limit = time.time() + config.stop_grace_s + FINAL_TIMEOUT_S
    while len(finals) < n and time.time() < limit:
        gevent.sleep(0.05)
    rec.flush_merged(time.time(), final=True)
    window = None
    if config.open_model:
        keys = ("scheduled", "started", "late", "dropped")
        window = {k: sum(int(f["window"][k]) for f in finals.values() if f.get("window"))
                  for k in keys}
    load = load_summary(config, rec, window, end=end,
                        stopped_early=stop_reason not in (None, SHAPE_ENDED),
                        stop_reason=stop_reason,
                        timeline={"load_start": load_start, "measure_start": measure_start,
                                  "planned_load_end": load_end})
    load["workers"] = n
    load["workers_reported"] = len(finals)
    write_load_json(run_dir, load)
    emit({"type": "done", "load": load})
    runner.quit()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return EXIT_OK


class _Worker:
    """The harness side of one Locust worker."""

    def __init__(self, env: Environment, classes: list[type[User]]) -> None:
        self.env = env
        assert env.runner is not None, "the worker runner is created before _Worker"
        self.runner = env.runner
        self.classes = classes
        self.rec: LatencyRecorder | None = None
        self.pacer: OpenModelPacer | None = None
        self.stopped = False

    def on_config(self, environment: Any, msg: Any, **kw: Any) -> None:
        c = msg.data
        open_model = c["model"] == "open"
        rec = LatencyRecorder(c["load_start"], c["interval_s"], measure_start=c["measure_start"],
                              open_model=open_model)
        rec.set_load_end(c["load_end"])
        if open_model:
            schedule = ArrivalSchedule(c["rate"], c["arrival"], c["seed"], c["load_start"],
                                       interval_s=c["interval_s"],
                                       measure_start=c["measure_start"],
                                       rate_fn=rate_function(c.get("rate_shape"),
                                                             c.get("rate_scale", 1.0)))
            self.pacer = OpenModelPacer(schedule, rec, load_end=c["load_end"],
                                        late_threshold_us=c["late_threshold_us"])
            self.pacer.wrap_user_classes(self.classes)
            rec.interval_hook = self.pacer.interval_counts
        RequestHook(rec, tag_keys=c["tag_keys"], open_model=open_model).install(self.env.events)
        self.rec = rec

    def on_report(self, client_id: str, data: dict[str, Any], **kw: Any) -> None:
        if self.rec is not None and not self.stopped:
            self.rec.tick(time.time())
            data["harness"] = self.rec.take_encoded()

    def on_stop(self, environment: Any = None, msg: Any = None, **kw: Any) -> None:
        if self.stopped or self.rec is None:
            return
        end = msg.data["end"] if msg is not None else time.time()
        window = self.pacer.window(end) if self.pacer else None
        self.runner.stop()  # waits up to stop_timeout for tasks in flight
        self.stopped = True
        self.rec.finish(time.time())
        self.runner.send_message("harness_final", {"report": self.rec.take_encoded(),
                                                   "window": window})


def run_worker(args: argparse.Namespace) -> int:
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
    worker = _Worker(env, classes)
    runner.register_message("harness_config", worker.on_config)
    runner.register_message("harness_stop", worker.on_stop, concurrent=True)
    env.events.report_to_master.add_listener(worker.on_report)
    stop = StopSignal()

    def watch() -> None:
        # SIGTERM, or the master process gone (a local worker outliving its driver).
        while not stop.event.wait(1.0):
            if args.parent_pid and os.getppid() != args.parent_pid:
                break
        worker.on_stop()
        runner.quit()

    gevent.spawn(watch)
    runner.send_message("harness_ready")
    runner.greenlet.join()
    return EXIT_OK
