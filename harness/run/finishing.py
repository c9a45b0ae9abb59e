"""The end of a run: its summary, its status and its exit code.

A run is ``complete`` (exit 0), ``degraded`` (exit 3: the service died, a self-check
error, no final report from the driver) or ``incomplete`` (exit 130: interrupted). The
measurements stay on disk whatever happens here: a summary that cannot be computed is
a message and a note, not a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.analysis.summary import summarize
from harness.run.options import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RunResult,
)
from harness.rundir import write_json_atomic, write_run_json

__all__ = ["finish_run"]


def finish_run(
    run_dir: Path,
    meta: dict[str, Any],
    load: dict[str, Any] | None,
    signum: int | None,
    messages: list[str],
) -> RunResult:
    """Summarize the run directory, decide the status, write run.json and summary.json."""
    summary: dict[str, Any] | None = None
    # The self-check reads the collectors' statuses (a profile's reason, a target that
    # passed a bound) from run.json: they were recorded when the collectors stopped.
    write_run_json(run_dir, meta)
    try:
        summary = summarize(run_dir, write=False)
    except Exception as exc:  # the measurements stay on disk even if summarizing fails
        messages.append(f"summary could not be computed: {exc}")
        meta["notes"].append(f"summary failed: {exc!r}")
    failed_checks = [
        c for c in (summary or {}).get("self_check", [])
        if not c.get("ok") and c.get("severity") == "error"
    ]
    if signum is not None or (load or {}).get("stopped_early"):
        status, code = "incomplete", EXIT_INTERRUPTED
        messages.append(
            f"interrupted (signal {signum}): the run directory holds what was measured"
        )
    elif messages or failed_checks or load is None:
        status, code = "degraded", EXIT_DEGRADED
        for c in failed_checks:
            messages.append(f"self-check {c.get('check')}: {c.get('detail')}")
        if load is None:
            messages.append("the load driver ended without a final report")
    else:
        status, code = "complete", EXIT_OK
    meta["status"] = status
    write_run_json(run_dir, meta)
    if summary is not None:
        summary["status"] = status
        write_json_atomic(run_dir / "summary.json", summary)
    return RunResult(run_dir=run_dir, status=status, exit_code=code, summary=summary,
                     messages=messages)
