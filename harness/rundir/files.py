"""Parsers for the line-oriented files of a run directory: ``.hlog``, ``.jsonl``, ``.csv``.

Pure functions of the file's text (``harness.rundir.RunDir`` does the I/O). Each
returns what it could read plus warnings for what it skipped: a process killed
mid-write leaves a last line without its newline, which is expected and reported as
"truncated last line"; a bad line elsewhere is reported as malformed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any, NamedTuple

import numpy as np
from hdrh.histogram import HdrHistogram

from harness import stats

__all__ = ["HlogInterval", "ResourceSample", "parse_hlog", "parse_jsonl", "parse_resources_csv"]

_START_TIME = re.compile(r"#\[StartTime:\s*([\d.]+)")
_BASE_TIME = re.compile(r"#\[BaseTime:\s*([\d.]+)")
_YEAR_S = 365 * 86400.0


class HlogInterval(NamedTuple):
    """One interval of an hlog, kept sparse (a dense 1 µs .. 1 h histogram is 188 kB).

    ``idx`` are counts-array indexes of the reference histogram layout, ``counts``
    the counts there; ``t`` is the absolute interval start (epoch s), ``dt`` its length.
    """

    t: float
    dt: float
    idx: np.ndarray
    counts: np.ndarray


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


def _bad_line(rel: str, number: int, rows: list[str], raw: str) -> str:
    last = number >= len(rows) - 1 and not raw.endswith("\n")
    return f"{rel}: {'truncated last line' if last else f'line {number} is malformed'}; skipped"


def _sparse(decoded: HdrHistogram, ref: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    counts = stats.counts_array(decoded)
    if decoded.get_total_count() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # scan only between the decoded min and max: latencies span a few % of the array
    lo = decoded.get_counts_array_index(decoded.min_value)
    hi = min(decoded.get_counts_array_index(decoded.max_value) + 1, len(counts))
    idx = np.flatnonzero(counts[lo:hi]) + lo
    values = counts[idx].astype(np.int64)
    layout = ("lowest_trackable_value", "highest_trackable_value", "significant_figures")
    if any(getattr(decoded, a) != getattr(ref, a) for a in layout):
        # a foreign layout: move each bucket to ours by its value
        idx = np.array([ref.get_counts_array_index(decoded.get_value_from_index(int(i)))
                        for i in idx], dtype=np.int64)
    return idx, values


def parse_hlog(raw: str, rel: str, ref: HdrHistogram) -> tuple[list[HlogInterval], list[str]]:
    """Intervals of an HdrHistogram interval log (format 1.x) in ``ref``'s counts layout.

    Timestamps follow HdrHistogram's reader: ``#[BaseTime]`` if given, else stamps more
    than a year before ``#[StartTime]`` are offsets from it and others are absolute.
    """
    out: list[HlogInterval] = []
    warnings: list[str] = []
    start_time = base_time = None
    rows = raw.split("\n")
    for number, line in enumerate(rows, 1):
        if not line.strip() or line.startswith('"'):
            continue
        if line.startswith("#"):
            if m := _START_TIME.match(line):
                start_time = float(m.group(1))
            elif m := _BASE_TIME.match(line):
                base_time = float(m.group(1))
            continue
        if line.startswith("Tag="):
            line = line.split(",", 1)[1] if "," in line else ""
        try:
            t_s, dt_s, _max, payload = line.split(",", 3)
            offset, dt = float(t_s), float(dt_s)
            decoded = HdrHistogram.decode(payload.strip())
        except Exception:  # noqa: BLE001 - any decode failure means a bad line
            warnings.append(_bad_line(rel, number, rows, raw))
            continue
        if start_time is None:
            start_time = offset
        if base_time is None:
            base_time = start_time if offset < start_time - _YEAR_S else 0.0
        idx, counts = _sparse(decoded, ref)
        out.append(HlogInterval(offset + base_time, dt, idx, counts))
    return out, warnings


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
            warnings.append(_bad_line(rel, number, rows, raw))
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
