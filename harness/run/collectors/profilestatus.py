"""The profile collector's status: what py-spy did, per view and per process, and why not.

Pure functions over the finished :class:`~harness.run.collectors.pyspy.PySpyRun` list
(each with ``info`` read by ``pyspy.read_output``); the meaning of every field of
``profile/status.json`` is in docs/collectors.md.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any

from harness.run.collectors.proctree import BUSY_SHARE, ParentLooks
from harness.run.collectors.pyspy import PySpyRun, cpu_total

__all__ = ["MISSED_GONE", "MISSED_WINDOW_END", "failure_reason", "missed", "process_rows",
           "run_failure", "status", "view_info"]

MISSED_GONE = "exited before py-spy attached (a short-lived process: not in the profile)"
MISSED_WINDOW_END = "the measured window ended while py-spy was attaching"


def view_info(runs: list[PySpyRun]) -> dict[str, Any]:
    """One view's py-spy reports summed over its processes."""
    infos = [r.info or {} for r in runs]
    return {
        "processes": len(runs),
        "written": any(i.get("written") for i in infos),
        "samples": sum(i.get("samples") or 0 for i in infos),
        "collapsed_samples": sum(i.get("collapsed_samples") or 0 for i in infos),
        "empty_samples": sum(i.get("empty_samples") or 0 for i in infos),
        "errors": sum(i.get("errors") or 0 for i in infos),
        "lag_warnings": sum(i.get("lag_warnings") or 0 for i in infos),
        "max_lag_s": max((i.get("max_lag_s") or 0.0 for i in infos), default=0.0),
        "processes_exited": sum(1 for i in infos if i.get("target_exited")),
        "killed_after_timeout": sum(1 for r in runs if r.forced),
    }


def missed(run: PySpyRun) -> str | None:
    """Why py-spy wrote nothing though nothing failed; None when that is a failure.

    Two races that are not failures of the profiler: the process ended between the
    collector's look and py-spy's attach (a worker recycled by gunicorn --max-requests,
    a short-lived helper), or the measured window ended while py-spy was still attaching
    (it was started on a new process moments before the end). A process that is still
    running, or one py-spy had attached to, without a profile is a failure.
    """
    info = run.info or {}
    if info.get("written") or info.get("attached") or run.forced or run.error:
        return None
    if info.get("gone"):
        return MISSED_GONE
    if run.interrupted and info.get("returncode") == -signal.SIGINT:
        return MISSED_WINDOW_END
    return None


def run_failure(run: PySpyRun) -> str:
    info = run.info or {}
    if info.get("error_lines"):
        return str(info["error_lines"][-1])
    if run.forced:
        return "did not exit after SIGINT and was killed: no output written"
    last = f" (last output: {info['last_line']})" if info.get("last_line") else ""
    return f"exited with code {info.get('returncode')} and wrote no output{last}"


def failure_reason(per_view: Mapping[str, Mapping[str, Any]],
                   runs: Sequence[PySpyRun]) -> str | None:
    for view, info in per_view.items():
        if info["written"]:
            continue
        failed = next((r for r in runs if r.view == view), None)
        if failed is None:
            return f"py-spy ({view}) was not started"
        return f"py-spy ({view}): {missed(failed) or run_failure(failed)}"
    return None


def process_rows(runs: Sequence[PySpyRun], not_sampled: Mapping[int, ParentLooks],
                 cmdlines: Mapping[int, str]) -> list[dict[str, Any]]:
    """One row per process of the service seen: sampled (with its counts) or why not."""
    rows: dict[int, dict[str, Any]] = {}
    for run in runs:
        info = run.info or {}
        row = rows.setdefault(run.pid, {
            "pid": run.pid, "parent": run.chain[-2] if len(run.chain) > 1 else None,
            "command": cmdlines.get(run.pid), "sampled": True,
            "since": round(run.started, 3), "samples": {}, "errors": 0,
            "exited": False})
        row["samples"][run.view] = info.get("collapsed_samples", 0)
        if run.cpu_s is not None:
            row["cpu_s"] = round(row.get("cpu_s", 0.0) + run.cpu_s, 3)
        row["errors"] += info.get("errors") or 0
        row["exited"] = row["exited"] or bool(info.get("target_exited"))
        if not info.get("written"):
            why = missed(run)
            if why:
                row["exited"] = row["exited"] or why == MISSED_GONE
                row["missed"] = why
            else:
                row["failed"] = run_failure(run)
    for pid, looks in not_sampled.items():
        if pid not in rows:
            rows[pid] = {"pid": pid, "command": cmdlines.get(pid), "sampled": False,
                         "why": f"a parent process that used at most {100 * looks.max_share:.1f}"
                                f" % of a core between looks (not >= {100 * BUSY_SHARE:g} % "
                                "twice in a row): not sampled"}
    return sorted(rows.values(), key=lambda r: r["pid"])


def status(*, views: Sequence[str], runs: Sequence[PySpyRun], written: list[str],
           per_view: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
           window: list[float], root_alive_at_end: bool, reason: str | None,
           rate_hz: int, nonblocking: bool, stage_map: str | None) -> dict[str, Any]:
    """profile/status.json (with ``by_view``; ``stop()`` returns it without)."""
    if reason is None and not runs and len(window) == 2:
        reason = "no process of the service was found to sample"
    ok = bool(runs) and len(written) == len(views) and reason is None
    exited = len(window) == 2 and not root_alive_at_end
    first = next((r for r in runs if r.view == views[0]), None)
    sampled = [r for r in rows if r["sampled"]]
    failed = [r for r in sampled if r.get("failed")]
    out: dict[str, Any] = {
        "ok": ok,
        "reason": None if ok else reason or failure_reason(per_view, runs),
        "samples": per_view.get(views[0], {}).get("collapsed_samples", 0),
        "errors": sum(v.get("errors") or 0 for v in per_view.values()),
        "rate_hz": rate_hz, "nonblocking": nonblocking, "views": written,
        "requested_views": list(views),
        "command": first.cmd if first is not None else [],
        "processes": rows,
        "cpu_s": cpu_total(runs),
        "window": {"start": window[0], "end": window[1]} if len(window) == 2 else None,
        "lag_warnings": sum(v["lag_warnings"] for v in per_view.values()),
        "max_lag_s": max((v["max_lag_s"] for v in per_view.values()), default=0.0),
        "target_exited": exited,
        "by_view": per_view,
        "stage_map": stage_map,
        "failed_processes": len(failed),
        "missed_processes": sum(1 for r in sampled if r.get("missed")),
    }
    if ok and exited:
        out["note"] = "the service exited while py-spy was sampling: the profile is partial"
    elif ok and failed:
        out["note"] = (f"py-spy wrote no profile for {len(failed)} of {len(sampled)} "
                       f"sampled processes (pid {failed[0]['pid']}: "
                       f"{failed[0]['failed']}): the profile is partial")
    return out
