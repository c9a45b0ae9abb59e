"""Running a load test: the orchestrator, its targets, its collectors, the capacity search.

``run(RunOptions)`` starts the target (or checks an external one), the collectors
(``harness.run.collectors``) and the load driver subprocess (``harness.load``), then
summarizes the run directory (``harness.analysis.summary``). Never imports Locust.

The names below are imported on first use: a collector module (``harness.run.collectors``)
imports this package, and should not pay for the orchestrator and the summary (numpy,
jsonschema: ~0.2 s) when it is used alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.run.options import (
        EXIT_DEGRADED,
        EXIT_INTERRUPTED,
        EXIT_OK,
        EXIT_START_FAILED,
        RunError,
        RunOptions,
        RunResult,
    )
    from harness.run.orchestrator import run

__all__ = ["EXIT_DEGRADED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_START_FAILED", "RunError",
           "RunOptions", "RunResult", "run"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'harness.run' has no attribute {name!r}")
    from harness.run import orchestrator

    return getattr(orchestrator, name)
