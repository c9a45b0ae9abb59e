"""One run: start the target, the collectors and the load driver; stop them; summarize.

The orchestrator never imports Locust: the load driver is a subprocess
(``python -m harness.load.driver``, harness/run/driverproc.py) that speaks JSON lines on
its stdout. It knows no collector by name either: it starts the registered ones
(harness/run/collectors/lifecycle.py) at their moment and records each one's status.
Whatever happens (the target dies, a stop signal comes at any moment, the driver crashes
or is killed) the run directory is left readable and marked with what happened
(harness/run/finishing.py), and every process the run started is stopped: each child
leads a process group the harness owns (harness/run/children.py), every wait on the
driver has a deadline (driverproc.DriverWatch), and SIGINT, SIGTERM, SIGHUP and SIGQUIT
are honoured from the first instant (harness/run/signals.py).

The public names (``run``, ``RunOptions``, ``RunResult``, ``RunError``, ``EXIT_*``) are
importable from here and from ``harness.run``.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness import __version__
from harness.run import children, workerevents
from harness.run.collectors.lifecycle import RunCollectors
from harness.run.driverproc import DriverProcess, DriverWatch, driver_config, exit_text
from harness.run.environment import collect_environment
from harness.run.finishing import finish_run, reserve_space, save_meta, write_final
from harness.run.modelversions import model_versions as _model_versions
from harness.run.options import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_START_FAILED,
    RunError,
    RunOptions,
    RunResult,
)
from harness.run.signals import Interrupted, Interrupts, signal_name
from harness.run.target import (
    ServedTarget,
    TargetError,
    check_reachable,
    find_local_service_pid,
    is_local,
    serve_reference,
)
from harness.rundir import clock, create_run_dir, write_run_json

__all__ = ["EXIT_DEGRADED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_START_FAILED", "RunError",
           "RunOptions", "RunResult", "run"]

Event = dict[str, Any]


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:  # in chunks: a locustfile's size is not ours to choose
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _guarded(on_event: Callable[[Event], None] | None) -> Callable[[Event], None]:
    """``on_event`` that can fail without failing the run: after a hang-up the terminal is
    gone and every write to it raises (EIO); the run goes on and finishes its directory."""
    state = {"ok": on_event is not None}

    def emit(event: Event) -> None:
        if state["ok"] and on_event is not None:
            try:
                on_event(event)
            except OSError:
                state["ok"] = False

    return emit


def run(options: RunOptions, on_event: Callable[[Event], None] | None = None) -> RunResult:
    """Run one load test; raise RunError when it could not start. A stop signal before the
    load started ends it ``incomplete`` (exit 130) like one during the load."""
    emit = _guarded(on_event)
    with Interrupts() as interrupts:
        meta = _initial_meta(options)
        run_dir = _new_run_dir(options, meta)
        emit({"type": "run_dir", "path": str(run_dir)})
        session = _Session(options, run_dir, meta, emit, interrupts)
        try:
            with interrupts.raising():
                session.start_target()
                session.save()
            session.drive()
        except Interrupted as exc:
            return session.interrupted(exc.signum)
        except (RunError, TargetError, OSError, http.client.HTTPException) as exc:
            # HTTPException: the target's answer to a probe was not HTTP (BadStatusLine,
            # LineTooLong); like an unreachable target, the run could not start
            reason = str(exc) if not isinstance(exc, http.client.HTTPException) else \
                f"the target's answer is not usable HTTP ({type(exc).__name__}: {exc})"[:500]
            session.fail(reason)
            raise RunError(reason, run_dir) from None
        except BaseException as exc:  # a bug: the run directory still ends in a final state
            session.fail(f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            # Reached on success too: stopping twice is harmless (each stop is idempotent).
            session.stop_all()
        return finish_run(run_dir, meta, session.load, session.signal, session.messages,
                          forced_stop=session.forced_stop)


def _new_run_dir(options: RunOptions, meta: dict[str, Any]) -> Path:
    """The run directory with its first run.json, and space reserved for its last one;
    RunError naming --out when it cannot be made (nothing half-made is left)."""
    try:
        run_dir = create_run_dir(options.out, options.scenario.stem)
    except OSError as exc:
        raise RunError(f"--out must be a directory the harness can create and write in "
                       f"(got {str(options.out)!r}: {exc.strerror or exc})") from None
    try:
        write_run_json(run_dir, meta)
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise RunError(f"--out must be a directory the harness can write in (got "
                       f"{str(options.out)!r}: run.json: {exc.strerror or exc})") from None
    reserve_space(run_dir)
    return run_dir


def _initial_meta(options: RunOptions) -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "status": "running",
        "command_line": list(options.command_line) or [sys.argv[0], *sys.argv[1:]],
        "scenario": {
            "path": str(options.scenario.resolve()),
            "sha256": _sha256(options.scenario),
            "user_classes": list(options.user_classes),
        },
        "target": {},
        "load": options.describe_load(),
        "timeline": {"created": clock.now()},
        "environment": collect_environment(),
        "collectors": {},
        "notes": [],
    }


class _Session:
    """The processes and collectors of one run, and what it learnt on the way."""

    def __init__(self, options: RunOptions, run_dir: Path, meta: dict[str, Any],
                 emit: Callable[[Event], None], interrupts: Interrupts) -> None:
        self.options, self.run_dir, self.meta, self.emit = options, run_dir, meta, emit
        self.interrupts = interrupts
        self.served: ServedTarget | None = None
        self.url = ""
        self.service_pid: int | None = None
        self.driver: DriverProcess | None = None
        self.collectors: RunCollectors | None = None
        self.load: dict[str, Any] | None = None
        self.signal: int | None = None  # a stop signal that came while the load ran
        self.forced_stop = False  # the harness stopped a driver that overran its end
        self._children = children.mark()  # what this run starts comes after this
        self.messages: list[str] = []
        self._died: str | None = None

    def start_target(self) -> None:
        """Start the ``target`` collectors (they may configure the service and the driver),
        then start the reference service or check the external target."""
        options = self.options
        self.collectors = collectors = RunCollectors(
            options.collectors, run_dir=self.run_dir, service_pid=None, target_url=None,
            workers=options.workers)
        now = clock.now()
        collectors.start("target", loadgen_pid=None, measure_start=now + options.warmup_s,
                         measure_end=now + options.warmup_s + options.duration_s)
        for line in collectors.announce():
            self.emit({"type": "announce", "message": line})
        self.served, self.url, self.service_pid = _start_target(
            options, self.run_dir, self.meta, self.emit, collectors.target_env())
        collectors.service_pid, collectors.target_url = self.service_pid, self.url

    def drive(self) -> None:
        """Start the driver and the collectors, follow the driver's events to its end, every
        wait bounded (DriverWatch), stop signals forwarded to the driver."""
        options = self.options
        assert self.collectors is not None
        config = {**driver_config(options, self.run_dir, self.url),
                  **self.collectors.driver_config()}
        self.driver = driver = DriverProcess(self.run_dir, config)
        watch = DriverWatch(driver, options)
        now = clock.now()
        self.collectors.start("process", loadgen_pid=driver.pid,
                              measure_start=now + options.warmup_s,
                              measure_end=now + options.warmup_s + options.duration_s)
        while not driver.ended:
            event = driver.next_event(0.25)
            if event is not None:
                self._on_event(event, watch)
            watch.check(self.interrupts.received)
        code = driver.wait(10.0)
        self.meta["timeline"]["load_end"] = clock.now()
        self.meta["driver_exit_code"] = code
        self._after_driver(driver, watch, code)

    def _on_event(self, event: Event, watch: DriverWatch) -> None:
        kind = event.get("type")
        if kind == "started":
            watch.started()
            self._on_started(event)
        elif kind == "interval":
            self._check_service()
            self.emit(event)
        elif kind in ("waiting", "worker"):
            workerevents.record(self.meta, event)
            said = workerevents.describe(event)
            if said is not None:
                self.emit({"type": said[0], "message": said[1]})
            if event.get("event") == "lost":
                self.save()
        elif kind == "done":
            load = event.get("load")
            self.load = load if isinstance(load, dict) else None
        elif kind == "error":  # why the driver stops, when driver.log cannot say it
            note = f"the load driver: {str(event.get('message'))[:500]}"
            self.meta["notes"].append(note)
            self.messages.append(note)

    def _after_driver(self, driver: DriverProcess, watch: DriverWatch, code: int) -> None:
        """What the driver's end means for the run: not started (failed, or interrupted),
        or ended with or without its final report (then the run keeps what it measured)."""
        started = watch.started_at is not None
        self.signal = self.interrupts.signal
        for note in watch.notes:
            self.meta["notes"].append(note)
            self.messages.append(note)
        self.forced_stop = watch.overran
        if self.signal is not None and not started:
            raise Interrupted(self.signal)
        failure = driver.failure(code, started)
        if failure is not None:
            raise RunError(failure)
        driver.stop()  # what is left of its group: the workers of a driver that was killed
        if self.load is None and self.signal is None:
            died = (f"the load driver ended without its final report ({exit_text(code)}): "
                    "the run directory holds what it measured until then")
            self.meta["notes"].append(died)
            self.messages.append(died)
        self._check_service(at_end=True)

    def _on_started(self, event: Event) -> None:
        """The load started: the timeline is known, the ``load`` collectors start."""
        assert self.driver is not None and self.collectors is not None
        load_start = float(event["load_start"])
        measure_start = load_start + self.options.warmup_s
        measure_end = measure_start + self.options.duration_s
        self.meta["timeline"].update(load_start=load_start, measure_start=measure_start,
                                     planned_load_end=measure_end)
        self.save()
        workers = event.get("workers")
        self.collectors.start("load", loadgen_pid=self.driver.pid, measure_start=measure_start,
                              measure_end=measure_end, load_start=load_start,
                              workers=workers if isinstance(workers, int) else None)
        self.emit({"type": "started", "load_start": load_start,
                   "options": self.options.describe_load()})

    def _check_service(self, at_end: bool = False) -> None:
        """Note (once) that the reference service the harness started has exited."""
        served = self.served
        if served is None or served.alive() or self._died is not None:
            return
        self._died = (f"the reference service exited (code {served.process.returncode}) "
                      "during the run" + ("" if at_end else "; see service.log"))
        self.meta["notes"].append(self._died)
        self.messages.append(self._died)
        if not at_end:
            self.emit({"type": "status", "message": self._died})

    def stop_all(self) -> None:
        """Stop the driver's group, then the collectors (reverse order), then the service,
        then any child still running (idempotent)."""
        if self.driver is not None:
            self.driver.stop()
        if self.collectors is not None:
            self.meta["collectors"].update(self.collectors.stop())
        served = self.served
        if served is not None and served.process.returncode is None:
            served.stop()
            self.meta["target"]["stopped"] = True
        children.stop_all(since=self._children)

    def save(self) -> None:
        """run.json as it stands (a write error is noted once, not fatal: the final write,
        with the reserved space, is what must succeed)."""
        error = save_meta(self.run_dir, self.meta)
        if error is not None and error not in self.messages:
            self.messages.append(error)

    def fail(self, reason: str) -> None:
        """The run could not start (or broke): stop everything, mark it ``failed``."""
        self.meta["status"] = "failed"
        self.meta["notes"].append(reason)
        self.stop_all()
        write_final(self.run_dir, self.meta, self.messages)

    def interrupted(self, signum: int) -> RunResult:
        """A stop signal before the load started: nothing measured, the run ``incomplete``."""
        message = (f"interrupted by {signal_name(signum)} before the load started: "
                   "nothing was measured")
        self.stop_all()
        self.meta["status"] = "incomplete"
        self.meta["notes"].append(message)
        messages = [message]
        write_final(self.run_dir, self.meta, messages)
        return RunResult(run_dir=self.run_dir, status="incomplete",
                         exit_code=EXIT_INTERRUPTED, summary=None, messages=messages)


def _start_target(
    options: RunOptions, run_dir: Path, meta: dict[str, Any], emit: Callable[[Event], None],
    env: dict[str, str],
) -> tuple[ServedTarget | None, str, int | None]:
    if options.serve == "reference":
        emit({"type": "status", "message": "starting the reference service under gunicorn"})
        serve_options = options.serve_options
        if options.record_traffic:
            # The service records what it received into the run directory (replay format).
            serve_options = replace(serve_options, record_traffic=str(run_dir / "traffic"))
        served = serve_reference(serve_options, run_dir / "service.log", env)
        meta["target"] = {
            "url": served.url,
            "served_by_harness": True,
            "service": "reference",
            "service_options": serve_options.describe(),
            "startup_s": round(served.startup_s, 3),
        }
        meta["target"].update(_model_versions(served.url))
        return served, served.url, served.pid
    assert options.target is not None
    url = options.target.rstrip("/")
    check_reachable(url)
    remote = options.target_remote or not is_local(url)
    pid = None if remote else find_local_service_pid(url)
    meta["target"] = {"url": url, "served_by_harness": False, "local_pid": pid,
                      "remote": remote, "declared_remote": options.target_remote}
    meta["target"].update(_model_versions(url))
    if pid is None:
        meta["notes"].append(
            "target is not a local process the harness can see: service CPU and memory "
            "come from its /metrics process_* (and --node-metrics, the host's); no profile"
        )
    return None, url, pid
