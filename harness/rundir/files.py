"""Parsers for the line-oriented files of a run directory: ``.jsonl`` and ``.csv``
(the ``.hlog`` reader is beside its writer in ``harness.rundir.hlog``).

Pure functions of the file's text (``harness.rundir.RunDir`` does the I/O). Each
returns what it could read plus warnings for what it skipped: a process killed
mid-write leaves a last line without its newline, which is expected and reported as
"truncated last line"; a bad line elsewhere is reported as malformed.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, NamedTuple

__all__ = ["ResourceSample", "parse_jsonl", "parse_resources_csv", "rebuild_load"]



class ResourceSample(NamedTuple):
    """One row of resources.csv. cpu_percent: % of one core (system row: % of all cores)."""

    t: float
    pid: int
    role: str
    name: str
    cpu_percent: float
    rss_bytes: int
    num_threads: int | None
    ctx_voluntary: int | None
    ctx_involuntary: int | None
    num_fds: int | None


def bad_line(rel: str, number: int, rows: list[str], raw: str) -> str:
    last = number >= len(rows) - 1 and not raw.endswith("\n")
    return f"{rel}: {'truncated last line' if last else f'line {number} is malformed'}; skipped"


def parse_jsonl(raw: str, rel: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects with a numeric ``t``, one per line (intervals.jsonl)."""
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    rows = raw.split("\n")
    for number, line in enumerate(rows, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("t"), (int, float)):
                raise ValueError("not an object with a numeric t")
        except ValueError:
            warnings.append(bad_line(rel, number, rows, raw))
            continue
        out.append(obj)
    return out, warnings


def _opt_int(text: str | None) -> int | None:
    return int(float(text)) if text and text.strip() not in ("None", "nan") else None


def parse_resources_csv(raw: str, rel: str = "resources.csv"
                        ) -> tuple[list[ResourceSample], list[str]]:
    """Typed rows of resources.csv (columns in docs/run-directory.md)."""
    out: list[ResourceSample] = []
    warnings: list[str] = []
    for number, row in enumerate(csv.DictReader(io.StringIO(raw, newline="")), 2):
        try:
            out.append(ResourceSample(
                float(row["t"]), int(float(row["pid"])), row["role"], row.get("name") or "",
                float(row["cpu_percent"]), int(float(row["rss_bytes"] or 0)),
                _opt_int(row.get("num_threads")), _opt_int(row.get("ctx_voluntary")),
                _opt_int(row.get("ctx_involuntary")), _opt_int(row.get("num_fds"))))
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{rel}: row {number} is malformed or truncated; skipped")
    return out, warnings


def rebuild_load(settings: dict[str, Any], measured: list[dict[str, Any]], seconds: float
                 ) -> dict[str, Any]:
    """load.json's totals rebuilt from the measured intervals of intervals.jsonl, for a run
    whose driver died before writing load.json (``settings``: run.json's ``load``)."""
    totals: dict[str, Any] = {}
    for key in ("requests", "failures", "scheduled", "started", "late"):
        values = [iv[key] for iv in measured if isinstance(iv.get(key), (int, float))]
        totals[key] = int(sum(values)) if values else None
    totals["achieved_rps"] = (totals["requests"] / seconds
                              if totals["requests"] is not None and seconds > 0 else None)
    errors: dict[str, int] = {}
    for iv in measured:
        for key, n in (iv.get("errors") or {}).items():
            errors[key] = errors.get(key, 0) + int(n)
    return {"model": settings.get("model"), "arrival": settings.get("arrival"),
            "target_rps": settings.get("rate"), "users": settings.get("users"),
            "duration_s": settings.get("duration_s"), "warmup_s": settings.get("warmup_s"),
            "measured": totals, "errors": errors, "workers": settings.get("workers"),
            "stopped_early": True, "stop_reason": "the load driver did not finish",
            "source": "intervals.jsonl"}
