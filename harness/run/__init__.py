"""Running a load test: the orchestrator, its targets, its collectors, the capacity search.

``run(RunOptions)`` starts the target (or checks an external one), the collectors
(``harness.run.collectors``) and the load driver subprocess (``harness.load``), then
summarizes the run directory (``harness.analysis.summary``). Never imports Locust.
"""

from __future__ import annotations

from harness.run.orchestrator import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_START_FAILED,
    RunError,
    RunOptions,
    RunResult,
    run,
)

__all__ = ["EXIT_DEGRADED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_START_FAILED", "RunError",
           "RunOptions", "RunResult", "run"]
