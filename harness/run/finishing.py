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
from harness.run.signals import signal_name
from harness.rundir import write_json_atomic, write_run_json

__all__ = ["finish_run", "release_space", "reserve_space", "save_meta", "write_final"]

#: a file of this size is written when the run directory is made and deleted before the
#: final writes, so that a disk that fills during the run still takes the final run.json
#: and summary.json (a run.json left 'running' on a full disk said nothing)
RESERVE = ".space-reserve"
RESERVE_BYTES = 1 << 20


def reserve_space(run_dir: Path) -> None:
    try:
        with open(run_dir / RESERVE, "wb") as fh:
            fh.write(bytes(RESERVE_BYTES))
    except OSError:
        release_space(run_dir)  # a disk too full for it now: the run fails at its own writes


def release_space(run_dir: Path) -> None:
    try:
        (run_dir / RESERVE).unlink(missing_ok=True)
    except OSError:
        pass


def save_meta(run_dir: Path, meta: dict[str, Any]) -> str | None:
    """run.json as it stands; on a write error (a full disk) the error, not an exception:
    what the run still has to do matters more than this intermediate state."""
    try:
        write_run_json(run_dir, meta)
    except OSError as exc:
        return f"run.json could not be written: {exc.strerror or exc}"
    return None


def write_final(run_dir: Path, meta: dict[str, Any], messages: list[str]) -> None:
    """run.json in its final state, with the reserved space given back first."""
    release_space(run_dir)
    error = save_meta(run_dir, meta)
    if error is not None:
        messages.append(f"{error}: it still says 'running'")


def finish_run(
    run_dir: Path,
    meta: dict[str, Any],
    load: dict[str, Any] | None,
    signum: int | None,
    messages: list[str],
    forced_stop: bool = False,
) -> RunResult:
    """Summarize the run directory, decide the status, write run.json and summary.json.
    ``forced_stop``: the harness itself stopped a driver that overran (not a user's signal:
    the run is degraded, not interrupted)."""
    summary: dict[str, Any] | None = None
    # The self-check reads the collectors' statuses (a profile's reason, a target that
    # passed a bound) from run.json: they were recorded when the collectors stopped.
    release_space(run_dir)
    save_meta(run_dir, meta)
    try:
        summary = summarize(run_dir, write=False)
    except Exception as exc:  # the measurements stay on disk even if summarizing fails
        messages.append(f"summary could not be computed: {exc}")
        meta["notes"].append(f"summary failed: {exc!r}")
    failed_checks = [
        c for c in (summary or {}).get("self_check", [])
        if not c.get("ok") and c.get("severity") == "error"
    ]
    if signum is not None or ((load or {}).get("stopped_early") and not forced_stop):
        status, code = "incomplete", EXIT_INTERRUPTED
        by = signal_name(signum) if signum is not None else "a signal to the load driver"
        messages.append(f"interrupted ({by}): the run directory holds what was measured")
    elif messages or failed_checks or load is None:
        status, code = "degraded", EXIT_DEGRADED
        for c in failed_checks:
            messages.append(f"self-check {c.get('check')}: {c.get('detail')}")
    else:
        status, code = "complete", EXIT_OK
    meta["status"] = status
    write_final(run_dir, meta, messages)
    if summary is not None:
        summary["status"] = status
        try:
            write_json_atomic(run_dir / "summary.json", summary)
        except OSError as exc:
            messages.append(f"summary.json could not be written: {exc.strerror or exc}")
    return RunResult(run_dir=run_dir, status=status, exit_code=code, summary=summary,
                     messages=messages)
