"""The load driver subprocess as the orchestrator sees it: its config, its events, its end.

The driver (``python -m harness.load.driver RUN_DIR/driver.json``) speaks JSON lines on
its stdout (``started``, ``interval``, ``done``) and writes everything human to
``driver.log``; its exit code says whether the locustfile could be used (2) or the load
could not start (3). Formats: docs/internals.md, "Driver config".
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from harness.run.options import RunOptions
from harness.run.target import stop_process_tree
from harness.rundir import clock, write_json_atomic

__all__ = ["DriverProcess", "driver_config", "last_line"]

Event = dict[str, Any]


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
        "master_host": "127.0.0.1",
        "master_port": 0,
        "expect_workers_timeout_s": 30,
        "locust_args": list(options.locust_args),
    }


class DriverProcess:
    """The driver, started in its own session (stopping it stops its Locust workers)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        write_json_atomic(run_dir / "driver.json", config)
        self._log: IO[bytes] = open(run_dir / "driver.log", "ab")  # noqa: SIM115 - see wait()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.load.driver", str(run_dir / "driver.json"),
                 "--clock-anchor", repr(clock.offset())],
                stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self) -> Iterator[Event]:
        """The driver's JSON-line events until its stdout closes (other lines are skipped)."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event

    def wait(self) -> int:
        code = self.process.wait()
        self._log.close()
        return code

    def failure(self, code: int, load: Event | None, interrupted: bool) -> str | None:
        """Why the run could not go on after the driver exited with ``code``, or None."""
        if code == 2:
            return f"the locustfile could not be used: {last_line(self.run_dir / 'driver.log')}"
        if code != 0 and load is None and not interrupted:
            return (f"the load driver failed (exit code {code}): "
                    f"{last_line(self.run_dir / 'driver.log')}")
        return None

    def stop(self) -> None:
        """Stop the driver and its workers if they still run (idempotent)."""
        if self.process.poll() is None:
            stop_process_tree(self.process, timeout_s=15.0)
        if not self._log.closed:
            self._log.close()


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no driver.log)"
    return lines[-1] if lines else "(driver.log is empty)"
