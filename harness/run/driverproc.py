"""The load driver subprocess as the orchestrator sees it: its config, its events, its end.

The driver (``python -m harness.load.driver RUN_DIR/driver.json``) speaks JSON lines on
its stdout (``started``, ``interval``, ``done``) and writes everything human to
``driver.log``; its exit code says whether the locustfile could be used (2) or the load
could not start (3). Formats: docs/internals.md, "Driver config".

Every wait on the driver has a deadline (:class:`DriverWatch`): the ``started`` event
within ``start_timeout_s`` (a locustfile that hangs at import or in its init; its stacks
are dumped into driver.log first), the end within the planned load plus the stop grace and
:data:`END_SLACK_S`, and after a stop signal the exit within the grace plus
:data:`STOP_SLACK_S`; past each the driver's whole process group is stopped. The driver
leads a process group of its own (harness/run/children.py) holding its Locust workers, so
they are stopped even when the driver itself was killed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from harness.run import children
from harness.run.options import RunError, RunOptions
from harness.rundir import clock, write_json_atomic

__all__ = ["END_SLACK_S", "STOP_SLACK_S", "DriverProcess", "DriverWatch", "driver_config",
           "last_line"]

Event = dict[str, Any]
#: after the planned end and the stop grace: how long a driver may take to say ``done``
#: (load.json written, workers' finals in) before the harness stops it
END_SLACK_S = 30.0
#: after a stop signal was forwarded (beyond the stop grace): then the group is killed
STOP_SLACK_S = 10.0
#: how long the master waits for its workers' final reports (harness.load.distributed)
WORKERS_FINAL_S = 15.0
MAX_LINE_BYTES = 1 << 20  # a protocol line longer than this is not one of ours
_EOF = object()


def driver_config(options: RunOptions, run_dir: Path, url: str) -> dict[str, Any]:
    """driver.json for a run of ``options`` against ``url``."""
    return {
        "locustfile": str(options.scenario.resolve()),
        "host": url,
        "run_dir": str(run_dir),
        "model": options.model,
        "users": options.pool_users(),
        "spawn_rate": options.spawn_rate or float(options.pool_users()),
        "rate": options.peak_rate,
        "rate_shape": options.rate_shape,
        "arrival": options.arrival,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "interval_s": options.interval_s,
        "workers": options.workers,
        "tag_keys": list(options.tag_keys),
        "seed": options.seed,
        "user_classes": list(options.user_classes),
        "late_threshold_us": options.late_threshold_us,
        "request_timeout_s": options.request_timeout_s,
        "service_total": options.service_total,
        "master_host": options.master()[0],
        "master_port": options.master()[1],
        "local_workers": options.workers - options.remote_workers,
        "expect_workers_timeout_s": options.expect_workers_timeout_s,
        "locust_args": list(options.locust_args),
    }


class DriverProcess:
    """The driver, leading a process group of its own (stopping it stops its workers)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.config = config
        write_json_atomic(run_dir / "driver.json", config)
        self._log: IO[bytes] = open(run_dir / "driver.log", "ab")  # noqa: SIM115 - see wait()
        try:
            self.process = children.spawn(
                [sys.executable, "-m", "harness.load.driver", str(run_dir / "driver.json"),
                 "--clock-anchor", repr(clock.offset()), "--parent-pid", str(os.getpid())],
                stdout=subprocess.PIPE, stderr=self._log)
        except BaseException:
            self._log.close()
            raise
        self._events: queue.Queue[Any] = queue.Queue()
        self.ended = False
        threading.Thread(target=self._read, name="driver-events", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        """The driver's JSON-line events into the queue until its stdout closes."""
        out = self.process.stdout
        assert out is not None
        try:
            while True:
                raw = out.readline(MAX_LINE_BYTES)
                if not raw:
                    break
                try:
                    event = json.loads(raw)
                except ValueError:  # not ours (a cut line, a locustfile writing to fd 1)
                    continue
                if isinstance(event, dict):
                    self._events.put(event)
        except (OSError, ValueError):
            pass
        finally:
            self._events.put(_EOF)

    def next_event(self, timeout_s: float) -> Event | None:
        """The next event, or None when none came within ``timeout_s`` or the driver's
        stdout closed (then ``ended`` is True)."""
        if self.ended:
            return None
        try:
            item = self._events.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        if item is _EOF:
            self.ended = True
            return None
        return item  # type: ignore[no-any-return]

    def send(self, signum: int) -> None:
        """``signum`` to the driver alone (SIGTERM: it stops its users and workers itself)."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signum)
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL the driver's whole group at once."""
        children.signal_group(self.process, signal.SIGKILL)

    def wait(self, timeout_s: float = 10.0) -> int:
        """The driver's exit code; past ``timeout_s`` its group is stopped first."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            children.stop_group(self.process, timeout_s=5.0)
            code = self.process.wait()
        if not self._log.closed:
            self._log.close()
        return code

    def failure(self, code: int, started: bool) -> str | None:
        """Why the run could not go on after the driver exited with ``code`` before the
        load started, or None. A driver that dies after the start is not a failure: the
        run is degraded and keeps what was measured (the intervals are flushed as they go)."""
        if code == 2:
            return f"the locustfile could not be used: {last_line(self.run_dir / 'driver.log')}"
        if not started:
            return (f"the load driver ended before the load started ({exit_text(code)}): "
                    f"{last_line(self.run_dir / 'driver.log')}")
        return None

    def stop(self) -> None:
        """Stop the driver's group (its workers too) if anything of it still runs
        (idempotent)."""
        children.stop_group(self.process, timeout_s=15.0)
        if not self._log.closed:
            self._log.close()


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class DriverWatch:
    """The deadlines of one driver and what the harness does past each (module doc)."""

    def __init__(self, driver: DriverProcess, options: RunOptions) -> None:
        self.driver = driver
        self.workers = options.workers > 0
        self.grace_s = float(driver.config.get("stop_grace_s", 2.0)) + (
            WORKERS_FINAL_S if self.workers else 0.0)
        self.load_s = options.warmup_s + options.duration_s
        self.start_timeout_s = options.start_timeout_s + (
            float(driver.config.get("expect_workers_timeout_s", 30)) if self.workers else 0.0)
        self.start_deadline = time.monotonic() + self.start_timeout_s
        self.started_at: float | None = None
        self.end_deadline: float | None = None
        self.kill_at: float | None = None
        self.forwarded = 0
        self.overran = False  # the harness told the driver to stop: it ran past its end
        self.notes: list[str] = []

    def started(self) -> None:
        self.started_at = time.monotonic()
        self.end_deadline = self.started_at + self.load_s + self.grace_s + END_SLACK_S

    def check(self, signals: list[int]) -> None:
        """Forward new stop signals, enforce the deadlines. Raises RunError when the load
        did not start in time (the driver is stopped first)."""
        now = time.monotonic()
        if len(signals) > self.forwarded:
            if self.forwarded == 0:  # the driver stops its users and writes what it has
                self.driver.send(signal.SIGTERM)
                self.kill_at = now + self.grace_s + STOP_SLACK_S
            else:  # a second signal: no more patience
                self.driver.kill()
            self.forwarded = len(signals)
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self.driver.kill()
            self.notes.append("the load driver did not exit within "
                              f"{self.grace_s + STOP_SLACK_S:.0f} s of being told to stop: "
                              "killed")
        if self.started_at is None and now >= self.start_deadline and not signals:
            # its stacks into driver.log (greenlets, then threads): where it hangs
            for dump in (signal.SIGUSR2, signal.SIGUSR1):
                self.driver.send(dump)
                time.sleep(0.3)
            self.driver.kill()
            raise RunError(f"the load did not start within {self.start_timeout_s:g} s "
                           "(--start-timeout): the locustfile's import or init, or the "
                           "workers, hung; driver.log holds the driver's stacks")
        if self.end_deadline is not None and now >= self.end_deadline and not self.forwarded:
            self.end_deadline = None
            self.overran = True
            self.driver.send(signal.SIGTERM)
            self.kill_at = now + self.grace_s + STOP_SLACK_S
            self.forwarded = max(self.forwarded, 1)
            self.notes.append(f"the load driver had not finished {END_SLACK_S + self.grace_s:.0f}"
                              " s after the planned end: told to stop")


def last_line(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no driver.log)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "(driver.log is empty)"
