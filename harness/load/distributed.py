"""The master role of the load driver (``workers: N``).

The master runs no users: it starts ``local_workers`` worker subprocesses (default all N;
the rest connect from other hosts with ``harness worker --master HOST:PORT``), greets each
worker (harness/load/handshake.py: versions, the locustfile, clocks), waits until N have
said ``harness_ready``, sends each its share of the run (``harness_config``: timeline,
``rate/N`` and ``seed + index`` in the open model), and merges the interval histograms
the workers attach to Locust's periodic report (``report_to_master``, every ~3 s)
exactly, by interval start. At the end it sends ``harness_stop``; each worker stops its
users, closes its last interval and answers ``harness_final``; the master writes the
remaining intervals and load.json. Both roles run the one loop of harness/load/runloop.py;
the worker's side is harness/load/worker.py.

A worker that stops sending heartbeats (Locust marks it missing after ~3 s) is announced
at once; the run goes on with the others, and what it reports later is still merged (a
frozen worker that comes back loses nothing). One without a final report at the end is
lost: load.json's ``workers_lost`` says which, since when, and what it had reported, and
the self-check calls the run degraded (its numbers lack that worker's share of the load).

Clocks: intervals are aligned to the master's ``load_start``; a remote worker moves its
clock to the master's when it joins, and checks it during the run (handshake.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import User
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner

from harness import __version__
from harness.load import handshake
from harness.load.calibrate import merge_connections
from harness.load.config import DriverConfig
from harness.load.locustfile import fire_init, make_environment
from harness.load.recorder import LatencyRecorder
from harness.load.runloop import (
    EXIT_OK,
    SHAPE_ENDED,
    Emitter,
    Plan,
    StartError,
    StopSignal,
    run_users,
    shape_ended,
    start_users,
)
from harness.rundir import clock

__all__ = ["run_master"]

REPORT_GRACE_S = 10.0  # > 3 worker reports (3 s apart): an interval waits this long at most
FINAL_TIMEOUT_S = 15.0
WINDOW_KEYS = ("scheduled", "started", "late", "late_loop", "dropped")
ALL_LOST = "every worker was lost"


def _worker_command(config: DriverConfig, port: int) -> list[str]:
    host = config.master_host if config.master_host not in ("*", "0.0.0.0", "") else "127.0.0.1"
    return [sys.executable, "-m", "harness.load.driver", "--worker", "--master-host", host,
            "--master-port", str(port), "--locustfile", config.locustfile,
            "--parent-pid", str(os.getpid()), "--clock-anchor", repr(clock.offset())]


# -- master ----------------------------------------------------------------------------------

class Greeter:
    """The master's side of handshake.py: answers hellos (welcome or refusal) and pings."""

    def __init__(self, runner: MasterRunner, config: DriverConfig, emit: Emitter) -> None:
        self.runner, self.config, self.emit = runner, config, emit
        self.refused: dict[str, str] = {}  # reason -> host
        self.full = False  # the run has its workers: later ones are turned away
        runner.register_message("harness_hello", self.on_hello)
        runner.register_message("harness_ping", self.on_ping)

    def on_hello(self, environment: Any, msg: Any, **kw: Any) -> None:
        hello = msg.data if isinstance(msg.data, dict) else {}
        reason = handshake.refusal(hello)
        if reason is None and self.full:
            reason = (f"the master already has its {self.config.workers} workers and runs "
                      "(a worker that joins a running load would get no share of it)")
        if reason is not None:
            if reason not in self.refused:
                self.refused[reason] = str(hello.get("host"))
                self.emit({"type": "worker", "event": "refused", "host": hello.get("host"),
                           "reason": reason})
            self.runner.send_message("harness_refused", {"reason": reason,
                                                         "harness": __version__},
                                     client_id=msg.node_id)
            return
        shipped = None
        if not hello.get("has_locustfile"):
            path = Path(self.config.locustfile)
            shipped = {"filename": path.name, "contents": path.read_text(encoding="utf-8")}
        self.runner.send_message("harness_welcome", {
            "harness": __version__, "locustfile": shipped,
            "locust_args": list(self.config.locust_args),
            "request_timeout_s": self.config.request_timeout_s, "seed": self.config.seed,
        }, client_id=msg.node_id)

    def on_ping(self, environment: Any, msg: Any, **kw: Any) -> None:
        self.runner.send_message("harness_pong", {"t0": msg.data["t0"], "t1": clock.now()},
                                 client_id=msg.node_id)


class MasterRole:
    """Runs no users: merges the workers' interval histograms and collects their finals."""

    def __init__(self, env: Environment, runner: MasterRunner, config: DriverConfig,
                 plan: Plan, rec: LatencyRecorder, workers: dict[str, dict[str, Any]],
                 emit: Emitter) -> None:
        self.env, self.runner, self.config, self.plan, self.rec = env, runner, config, plan, rec
        self.workers = workers  # id -> what it said when ready (host, clock at connect)
        self.emit = emit
        self.finals: dict[str, dict[str, Any]] = {}
        self.lost: dict[str, dict[str, Any]] = {}  # no final report by the end
        self.missing_since: dict[str, float] = {}  # no heartbeat now, since
        self.gaps: dict[str, list[list[float]]] = {}  # missing, then back: [from, to]
        #: each worker's CPU (% of one core) as its heartbeats said, once a second: a
        #: remote worker's only CPU figure (psutil sees local processes only)
        self.cpu: dict[str, list[float]] = {cid: [] for cid in workers}
        self._cpu_at = 0.0
        env.events.worker_report.add_listener(self.on_report)
        runner.register_message("harness_final", self.on_final)

    def on_report(self, client_id: str, data: dict[str, Any], **kw: Any) -> None:
        if "harness" in data:
            self.rec.merge_encoded(client_id, data["harness"])

    def on_final(self, environment: Any, msg: Any, **kw: Any) -> None:
        if msg.node_id in self.lost:
            return  # given up on after the end: load.json is written
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
        self.watch(now)
        self.rec.flush_merged(now)

    def watch(self, now: float) -> None:
        """Note workers Locust marks missing (no heartbeat for ~3 s, or removed) and those
        that come back. A missing worker's reports are still merged if they come (late,
        never lost); intervals do not wait for it beyond the report grace."""
        sample = now - self._cpu_at >= 1.0 and self.plan.load_start <= now <= self.plan.load_end
        if sample:
            self._cpu_at = now
        for cid in self.workers:
            if cid in self.finals:
                continue
            node = self.runner.clients.get(cid)
            gone = node is None or node.state == STATE_MISSING
            usage = getattr(node, "cpu_usage", None)
            if sample and not gone and isinstance(usage, (int, float)):
                self.cpu[cid].append(float(usage))
            if gone and cid not in self.missing_since:
                self.missing_since[cid] = now
                self.emit({"type": "worker", "event": "missing", "id": cid,
                           "host": self.workers[cid].get("host"),
                           "after_s": round(now - self.plan.load_start, 3)})
            elif not gone and cid in self.missing_since:
                since = self.missing_since.pop(cid)
                self.gaps.setdefault(cid, []).append([round(since, 6), round(now, 6)])
                self.emit({"type": "worker", "event": "back", "id": cid,
                           "host": self.workers[cid].get("host"),
                           "missing_s": round(now - since, 3)})

    def lose(self, cid: str, now: float) -> None:
        """A worker without a final report at the end: lost since it went missing."""
        since = self.missing_since.get(cid)
        why = ("stopped sending heartbeats" if since is not None else "sent no final report "
               f"within {self.config.stop_grace_s + FINAL_TIMEOUT_S:g} s of the end")
        at = since if since is not None else now
        self.lost[cid] = lost = {
            "id": cid, "host": self.workers[cid].get("host"), "why": why,
            "lost_at": round(at, 6), "after_s": round(at - self.plan.load_start, 3),
            "intervals_reported": self.rec.reported_through(cid) + 1,
            "requests_reported": self.rec.source_requests.get(cid, 0),
            "measured_reported": self.rec.source_measured.get(cid, 0)}
        self.emit({"type": "worker", "event": "lost", **lost})

    def ended(self, now: float) -> str | None:
        if len(self.missing_since) == len(self.workers):
            return ALL_LOST
        return SHAPE_ENDED if shape_ended(self.env, self.plan, now) else None

    def finish(self, end: float) -> dict[str, int] | None:
        """Tell the workers to stop and wait (a bounded time) for the final reports of all
        that are not missing; those without one are lost."""
        self.runner.send_message("harness_stop", {"end": end})
        limit = clock.now() + self.config.stop_grace_s + FINAL_TIMEOUT_S
        while clock.now() < limit and any(
                cid not in self.finals and cid not in self.missing_since for cid in self.workers):
            gevent.sleep(0.05)
            self.watch(clock.now())
        for cid in self.workers:
            if cid not in self.finals:
                self.lose(cid, clock.now())
        self.rec.flush_merged(clock.now(), final=True)
        if not self.config.open_model:
            return None
        window = {k: sum(int(f["window"][k]) for f in self.finals.values() if f.get("window"))
                  for k in WINDOW_KEYS}
        return self.lost_share(window)

    def lost_share(self, window: dict[str, int]) -> dict[str, int]:
        """Add the lost workers' share of the schedule (their counts never came): each had
        the same rate as the others, so as many arrivals as the survivors' mean; what it
        reported had started, the rest counts as never sent (dropped)."""
        survivors = len(self.finals)
        if not self.lost or not survivors:
            return window
        share = round(window["scheduled"] / survivors)
        for lost in self.lost.values():
            sent = min(share, int(lost["measured_reported"]))
            window["scheduled"] += share
            window["started"] += sent
            window["dropped"] += share - sent
        window["scheduled_estimated"] = share * len(self.lost)
        return window

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workers": len(self.workers), "workers_reported": len(self.finals),
                               "workers_detail": self.details(),
                               "workers_lost": list(self.lost.values())}
        overheads = [f["client_overhead"] for f in self.finals.values()
                     if isinstance(f.get("client_overhead"), dict)
                     and f["client_overhead"].get("p50_us") is not None]
        if overheads:  # the slowest worker's client path: the residual's largest share
            out["client_overhead"] = {**max(overheads, key=lambda o: o["p50_us"]),
                                      "connections": merge_connections(overheads)}
        totals = [f["service_total"] for f in self.finals.values() if f.get("service_total")]
        if totals:
            names = {t.get("name") for t in totals}
            out["service_total"] = dict(totals[0]) if len(names) == 1 else {
                "name": None, "how": f"the workers decided differently: {sorted(map(str, names))}"
                                    "; the residual of each worker used its own decision",
                "evidence": {}, "total_missing": sum(t.get("total_missing", 0) for t in totals)}
        return out

    def details(self) -> list[dict[str, Any]]:
        """Per worker: host, clock at connect and during the run, what it reported."""
        out = []
        for i, (cid, info) in enumerate(self.workers.items()):
            final = self.finals.get(cid) or {}
            cpu = self.cpu.get(cid) or []
            row = {"index": i, "id": cid, **info, **(final.get("clock") or {}),
                   "requests": self.rec.source_requests.get(cid, 0),
                   "lost": cid in self.lost, "missing": self.gaps.get(cid, []),
                   "cpu_pct": [round(c, 1) for c in cpu]}
            out.append(row)
        return out


def _listen(env: Environment, config: DriverConfig) -> MasterRunner:
    try:
        return env.create_master_runner(config.master_host, config.master_port)
    except (Exception, SystemExit) as exc:
        raise StartError(f"master could not listen on {config.master_host}:"
                         f"{config.master_port} ({type(exc).__name__}: {exc})") from None


def _wait_for_workers(runner: MasterRunner, config: DriverConfig, greeter: Greeter,
                      procs: list[subprocess.Popen[bytes]], stop: StopSignal,
                      emit: Emitter) -> dict[str, dict[str, Any]]:
    """Each worker's id -> what it said when ready, once ``config.workers`` are ready."""
    ready: dict[str, dict[str, Any]] = {}

    def on_ready(environment: Any, msg: Any, **kw: Any) -> None:
        if msg.node_id in ready or len(ready) >= config.workers:
            return
        ready[msg.node_id] = info = dict(msg.data) if isinstance(msg.data, dict) else {}
        emit({"type": "worker", "event": "connected", "id": msg.node_id, **info,
              "connected": len(ready), "expected": config.workers})

    runner.register_message("harness_ready", on_ready)
    deadline = clock.now() + config.expect_workers_timeout_s
    while len(ready) < config.workers:
        dead = [p.returncode for p in procs if p.poll() is not None]
        if dead or clock.now() > deadline or stop.event.is_set():
            for p in procs:
                p.kill()
            raise StartError(_not_ready(config, len(ready), dead, stop, greeter))
        gevent.sleep(0.05)
    return ready


def _not_ready(config: DriverConfig, ready: int, dead: list[int | None], stop: StopSignal,
               greeter: Greeter) -> str:
    if dead:
        return f"a local worker exited with code {dead[0]}"
    if stop.event.is_set():
        return "interrupted"
    why = (f"{ready} of {config.workers} workers connected within "
           f"{config.expect_workers_timeout_s:g} s (--expect-workers-timeout)")
    if greeter.refused:
        why += "; refused: " + "; ".join(greeter.refused)
    return why


def run_master(config: DriverConfig, classes: list[type[User]], shape: Any,
               emit: Emitter, stop: StopSignal, local_workers: int | None = None) -> int:
    """workers: N: start ``local_workers`` (default N) worker processes, wait for N, run."""
    env = make_environment(config, classes, shape)
    runner = _listen(env, config)
    env.parsed_locustfiles = [config.locustfile]
    greeter = Greeter(runner, config, emit)
    fire_init(env)
    port = runner.server.port
    n_local = config.workers if local_workers is None else local_workers
    emit({"type": "waiting", "expected": config.workers, "local": n_local,
          "remote": config.workers - n_local, "bind": f"{config.master_host}:{port}"})
    procs = [subprocess.Popen(_worker_command(config, port), stdout=sys.stderr.fileno())
             for _ in range(n_local)]
    workers = _wait_for_workers(runner, config, greeter, procs, stop, emit)
    greeter.full = True
    # A short lead so that every worker holds its plan before the schedule starts (the
    # round trip to a remote worker included).
    rtt = max((float(w.get("rtt_ms") or 0) for w in workers.values()), default=0.0) / 1e3
    plan = Plan.starting_at(clock.now() + 0.2 + 2 * rtt, config)
    rec = LatencyRecorder(plan.load_start, config.interval_s, measure_start=plan.measure_start,
                          out_dir=Path(config.run_dir), open_model=config.open_model,
                          grace_s=REPORT_GRACE_S + config.interval_s,
                          on_interval=emit.interval, users=lambda: runner.user_count)
    role = MasterRole(env, runner, config, plan, rec, workers, emit)
    role.send_plans()
    run_users(env, role, config, plan, rec, emit, stop,
              {"workers": len(workers), "master_port": port})
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return EXIT_OK
