"""The one small interface between the run orchestrator and its collectors.

The orchestrator builds one :class:`CollectorContext` per run, calls
``start(ctx)`` on every collector when the load starts and ``stop()`` when it
ends. A collector owns its files in the run directory; ``stop()`` writes them
and returns a JSON-serialisable status dict that goes into ``run.json`` under
``collectors.<name>``. ``stop()`` is idempotent and never raises: a collector
whose target died mid-run reports that in its status instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

__all__ = ["Collector", "CollectorContext"]


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
        measure_start: epoch seconds when the measured window starts (after warm-up).
        measure_end: epoch seconds when the measured window is planned to end.
        options: options for the collector this context is given to (read-only
            copy); each collector documents and validates its own keys
            (docs/collectors.md), e.g. ``rate_hz`` for both, ``pyspy`` for profile.
    """

    run_dir: Path
    service_pid: int | None
    loadgen_pid: int | None
    measure_start: float
    measure_end: float
    options: Mapping[str, Any] = field(default_factory=dict)

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
