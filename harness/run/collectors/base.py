"""The one small interface between the run orchestrator and its collectors.

A collector declares itself with a :class:`CollectorSpec` (its name, when it starts, its
options and its command-line flags) registered in ``harness.run.collectors.registry``.
The orchestrator builds one :class:`CollectorContext` per collector, calls ``start(ctx)``
at the collector's moment (``at="process"``: as soon as the load driver process exists;
``at="load"``: at the driver's ``started`` event) and ``stop()`` after the load, in
reverse start order. A collector owns its files in the run directory; ``stop()`` writes
them and returns a JSON-serialisable status dict that goes into ``run.json`` under
``collectors.<name>``. ``stop()`` is idempotent and never raises: a collector whose
target died mid-run reports that in its status instead. docs/collectors.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = ["AT", "Collector", "CollectorContext", "CollectorSpec", "ConfiguresRun",
           "RunsProcesses"]

#: when a collector starts: before the target (so a service the harness starts can be
#: configured for it), with the load driver process, or at the driver's ``started`` event
AT = ("target", "process", "load")


def _check_pid(label: str, pid: object) -> None:
    # bool is an int subclass; True as a pid is always a caller bug.
    if pid is None:
        return
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"{label} must be a positive int or None (got {pid!r})")


def _check_time(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{label} must be epoch seconds as a number (got {value!r})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{label} must be finite epoch seconds >= 0 (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class CollectorContext:
    """What a collector needs to know about the run, checked when built.

    Attributes:
        run_dir: the run directory (must exist); collectors write inside it.
        service_pid: pid of the service's top process (the gunicorn master when
            the harness serves it), or None when the target is not local.
        loadgen_pid: pid of the load driver subprocess, or None.
        measure_start: epoch seconds when the measured window starts (after warm-up;
            for a collector started with the process, the planned start).
        measure_end: epoch seconds when the measured window is planned to end.
        options: options for the collector this context is given to (read-only
            copy); each collector documents and validates its own keys
            (docs/collectors.md), e.g. ``rate_hz`` for both, ``pyspy`` for profile. The
            orchestrator gives a registered collector its typed options as a mapping.
        target_url: the base URL the load is sent to (``http://127.0.0.1:8000``), or None.
        workers: Locust worker processes of the load driver (0: it loads by itself).
        load_start: epoch seconds when the load started (the driver's ``started``
            event); None for a collector started with the driver process.
        collector_pids: pids of the processes the run's collectors run themselves (py-spy),
            asked again at every call; None outside a run.
    """

    run_dir: Path
    service_pid: int | None
    loadgen_pid: int | None
    measure_start: float
    measure_end: float
    options: Mapping[str, Any] = field(default_factory=dict)
    target_url: str | None = None
    workers: int = 0
    load_start: float | None = None
    collector_pids: Callable[[], list[int]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.run_dir, Path):
            raise ValueError(f"run_dir must be a pathlib.Path (got {self.run_dir!r})")
        if not self.run_dir.is_dir():
            raise ValueError(f"run_dir must be an existing directory (got {str(self.run_dir)!r})")
        _check_pid("service_pid", self.service_pid)
        _check_pid("loadgen_pid", self.loadgen_pid)
        start = _check_time("measure_start", self.measure_start)
        end = _check_time("measure_end", self.measure_end)
        if end < start:
            raise ValueError(
                f"measure_end must be >= measure_start (got {end!r} < {start!r})"
            )
        if not isinstance(self.options, Mapping):
            raise ValueError(f"options must be a mapping (got {self.options!r})")
        if self.target_url is not None and not (
                isinstance(self.target_url, str) and self.target_url.startswith(("http://",
                                                                                 "https://"))):
            raise ValueError(f"target_url must be an http(s) URL or None (got {self.target_url!r})")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0 (got {self.workers!r})")
        if self.load_start is not None:
            object.__setattr__(self, "load_start", _check_time("load_start", self.load_start))
        if self.collector_pids is not None and not callable(self.collector_pids):
            raise ValueError(f"collector_pids must be callable or None "
                             f"(got {self.collector_pids!r})")
        # Frozen means frozen: a collector must not see another one's edits.
        object.__setattr__(self, "measure_start", start)
        object.__setattr__(self, "measure_end", end)
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@runtime_checkable
class Collector(Protocol):
    """A collector: started once, stopped once (stop may be called again)."""

    name: str

    def start(self, ctx: CollectorContext) -> None:
        """Begin collecting; must return quickly (work happens in threads or subprocesses)."""
        ...

    def stop(self) -> dict[str, Any]:
        """Finish, write files into ``ctx.run_dir``, return the status for run.json.

        Idempotent: later calls return the same dict. Never raises.
        """
        ...


@runtime_checkable
class ConfiguresRun(Protocol):
    """A collector started at ``"target"`` that the rest of the run must know about: the
    environment a service the harness starts needs (an exporter's endpoint), keys for the
    load driver's config (driver.json), and lines for the user (where to point a service
    the harness does not start)."""

    def target_env(self) -> dict[str, str]:
        ...

    def driver_config(self) -> dict[str, Any]:
        ...

    def announce(self) -> list[str]:
        ...


@runtime_checkable
class RunsProcesses(Protocol):
    """A collector that runs processes of its own (py-spy): the resources collector samples
    them as ``profiler`` (through ``CollectorContext.collector_pids``)."""

    def pids(self) -> list[int]:
        """Pids of its processes running now; called from other threads."""
        ...


OptionsT = TypeVar("OptionsT")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class CollectorSpec(Generic[OptionsT]):
    """How a collector is declared to the orchestrator and the ``harness run`` command.

    Attributes:
        name: its key in run.json ``collectors`` and in ``RunOptions.collectors``.
        at: ``"process"`` (started as soon as the load driver process exists, like
            resources) or ``"load"`` (at the driver's ``started`` event, when the timeline
            is known, like profile and prometheus).
        options: the options class, a frozen dataclass whose ``__post_init__`` checks its
            fields (``ValueError("X must be ... (got ...)")``); ``options()`` are the defaults.
        create: builds the collector from its checked options and the context it will be
            started with (the target URL, the timeline); must not start anything.
        default_on: runs when ``RunOptions.collectors`` does not name it.
        add_flags: adds its flags to an ``argparse`` group of ``harness run``.
        from_args: its options from the parsed arguments, or None when the flags turn it off.
        stop_timeout_s: how long the orchestrator waits for ``stop()`` before it records
            the collector as failed and goes on (its own grace must fit inside).
        title: the heading of its flags in ``harness run --help``.
    """

    name: str
    at: str
    options: type[OptionsT]
    create: Callable[[OptionsT, CollectorContext], Collector]
    default_on: bool = True
    add_flags: Callable[[argparse._ArgumentGroup], None] | None = None
    from_args: Callable[[argparse.Namespace], OptionsT | None] | None = None
    stop_timeout_s: float = 30.0
    title: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"collector name must be lower-case letters, digits and _ "
                             f"(got {self.name!r})")
        if self.at not in AT:
            raise ValueError(f"collector at must be one of {AT} (got {self.at!r})")
        if not (isinstance(self.options, type) and dataclasses.is_dataclass(self.options)):
            raise ValueError(f"collector options must be a dataclass type (got {self.options!r})")
        if not callable(self.create):
            raise ValueError(f"collector create must be callable (got {self.create!r})")
        if (self.add_flags is None) != (self.from_args is None):
            raise ValueError(f"collector {self.name}: give both add_flags and from_args, or "
                             "neither")
        if not (isinstance(self.stop_timeout_s, (int, float)) and self.stop_timeout_s > 0):
            raise ValueError(f"collector stop_timeout_s must be > 0 (got {self.stop_timeout_s!r})")

    def check(self, value: object) -> OptionsT | None:
        """Options for this collector from ``RunOptions.collectors[name]``: an options
        instance, a mapping of its fields, True (the defaults), or False/None (off)."""
        if value is None or value is False:
            return None
        if value is True:
            return self.options()
        if isinstance(value, self.options):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(self.options)}  # type: ignore[arg-type]
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown {self.name} options {unknown} (known: {sorted(known)})")
            return self.options(**value)
        raise ValueError(f"{self.name} collector options must be {self.options.__name__}, a "
                         f"mapping, True or None (got {value!r})")
