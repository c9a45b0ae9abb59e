"""Starting and stopping the collectors of one run, as the orchestrator does it.

The orchestrator knows no collector by name: it hands :class:`RunCollectors` the resolved
options (``RunOptions.collectors``), calls :meth:`RunCollectors.start` with ``"target"``
before it starts or checks the target (the collectors there may configure the service and
the driver: :meth:`target_env`, :meth:`driver_config`), with ``"process"`` once the load
driver process exists and with ``"load"`` at its ``started`` event, and
:meth:`RunCollectors.stop` after the load (before it stops the service). Stop goes in
reverse start order; each collector's status is returned for run.json
``collectors.<name>``. A collector that fails to start, raises in ``stop()`` or does not
return from it within its ``stop_timeout_s`` is recorded as failed: a collector must never
cost the run its data.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.run.collectors import registry
from harness.run.collectors.base import (
    AT,
    Collector,
    CollectorContext,
    CollectorSpec,
    ConfiguresRun,
    RunsProcesses,
)

__all__ = ["RunCollectors"]


class RunCollectors:
    """The collectors of one run, with what the run knows about its target."""

    def __init__(self, options: Mapping[str, Any], *, run_dir: Path, service_pid: int | None,
                 target_url: str | None, workers: int = 0) -> None:
        self.run_dir = run_dir
        self.service_pid = service_pid
        self.target_url = target_url
        self.workers = workers
        # options resolved before the run; a collector registered since is not in them
        self._planned = [(spec, options[spec.name]) for spec in registry.registered()
                         if options.get(spec.name) is not None]
        self._running: list[tuple[CollectorSpec[Any], Collector]] = []
        self._failed: dict[str, dict[str, Any]] = {}

    def start(self, at: str, *, loadgen_pid: int | None, measure_start: float,
              measure_end: float, load_start: float | None = None,
              workers: int | None = None) -> list[str]:
        """Start the collectors whose moment is ``at``; the names that started."""
        if at not in AT:
            raise ValueError(f"at must be one of {AT} (got {at!r})")
        started = []
        for spec, opts in self._planned:
            if spec.at != at:
                continue
            try:
                ctx = CollectorContext(
                    run_dir=self.run_dir, service_pid=self.service_pid, loadgen_pid=loadgen_pid,
                    measure_start=measure_start, measure_end=measure_end,
                    options=dataclasses.asdict(opts), target_url=self.target_url,
                    workers=self.workers if workers is None else workers, load_start=load_start,
                    collector_pids=self.pids)
                collector = spec.create(opts, ctx)
                collector.start(ctx)
            except Exception as exc:  # the run goes on without this collector
                self._failed[spec.name] = {"ok": False,
                                           "reason": f"start failed: {type(exc).__name__}: {exc}"}
                continue
            # Copy and swap: pids() is read from the resources sampler's thread.
            self._running = [*self._running, (spec, collector)]
            started.append(spec.name)
        return started

    def _configuring(self) -> list[ConfiguresRun]:
        return [c for _spec, c in self._running if isinstance(c, ConfiguresRun)]

    def target_env(self) -> dict[str, str]:
        """Environment variables a service the harness starts needs for the collectors."""
        env: dict[str, str] = {}
        for c in self._configuring():
            env.update(c.target_env())
        return env

    def driver_config(self) -> dict[str, Any]:
        """Keys the running collectors add to driver.json."""
        extra: dict[str, Any] = {}
        for c in self._configuring():
            extra.update(c.driver_config())
        return extra

    def announce(self) -> list[str]:
        """What the user should know before the load (where to point a service)."""
        return [line for c in self._configuring() for line in c.announce()]

    def pids(self) -> list[int]:
        """Pids of the processes the running collectors run themselves (py-spy)."""
        out: list[int] = []
        for _spec, collector in list(self._running):
            if isinstance(collector, RunsProcesses):
                try:
                    out += collector.pids()
                except Exception:  # a collector's pid list must not stop another's sampling
                    continue
        return out

    def stop(self) -> dict[str, dict[str, Any]]:
        """Stop the running collectors in reverse start order; name -> status (also of those
        that failed to start). Calling it again returns {}: each is stopped once."""
        statuses = dict(self._failed)
        self._failed = {}
        running, self._running = self._running, []
        for spec, collector in reversed(running):
            statuses[spec.name] = _stop_within(collector, spec.stop_timeout_s)
        return statuses


def _stop_within(collector: Collector, timeout_s: float) -> dict[str, Any]:
    """``collector.stop()``, waited for at most ``timeout_s``: a hung collector is recorded
    and left behind (its thread is a daemon), the run is not."""
    box: dict[str, dict[str, Any]] = {}

    def stop() -> None:
        try:
            box["status"] = collector.stop()
        except Exception as exc:
            box["status"] = {"ok": False, "reason": f"stop failed: {exc!r}"}

    began = time.monotonic()
    thread = threading.Thread(target=stop, name=f"stop-{collector.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "status" not in box:
        return {"ok": False, "reason": f"stop() did not return within {timeout_s:g} s "
                                       f"(waited {time.monotonic() - began:.1f} s)"}
    return box["status"]
