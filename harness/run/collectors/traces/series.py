"""Trace-derived stages into the run directory's latency series, beside Server-Timing's.

Each joined request adds its stage times, its service time (the server span) and its
residual to HdrHistograms per interval, keyed by the interval in which the request was
*sent* (the load driver's intervals start at ``series.json``'s ``start_time``). The series
are the same kinds Server-Timing gives (``stage`` and ``residual``), written with the same
hlog writer, and their entries in ``latency/series.json`` say ``"source": "traces"``; the
server span's series is the stage ``server`` with ``"total": true`` (the service's own
time, which the summary uses instead of a sum of stages).

Server-Timing is the more trusted source (the service measures its own stages): a request
name that already has Server-Timing stages keeps them, and its traces are only compared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.run.collectors.traces.join import Joined
from harness.rundir import write_json_atomic
from harness.rundir.hlog import HlogFiles, SeriesKey, new_histogram

__all__ = ["SERVER_STAGE", "write_trace_series"]

SERVER_STAGE = "server"


class _Entry:
    __slots__ = ("key", "file", "out_of_range", "hists")

    def __init__(self, key: SeriesKey, file: str) -> None:
        self.key, self.file, self.out_of_range = key, file, 0
        self.hists: dict[int, HdrHistogram] = {}


def _series_of(j: Joined) -> Iterable[tuple[str, str | None, int]]:
    """(metric, stage, value µs) of one joined request."""
    yield "stage", SERVER_STAGE, j.server_us
    for stage, us in j.stages_us.items():
        yield "stage", stage, us
    yield "residual", None, j.residual_us


def write_trace_series(run_dir: Path, joined: Iterable[Joined]) -> dict[str, Any]:
    """Add the joined requests' series to ``run_dir/latency``; returns what was written:
    ``{"names": [...], "skipped_names": {name: reason}, "series": n, "values": n}``."""
    index_path = run_dir / "latency" / "series.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        return {"names": [], "skipped_names": {}, "series": 0, "values": 0,
                "error": "latency/series.json is missing or unreadable: no load was recorded"}
    start, dt = float(index["start_time"]), float(index["interval_s"])
    existing = list(index.get("series") or [])
    with_st = {e.get("name") for e in existing
               if e.get("metric") == "stage" and e.get("source", "server_timing") != "traces"}
    files = HlogFiles(run_dir, start, dt)
    files._used.update(e.get("file") for e in existing)  # never overwrite a driver's file
    entries: dict[SeriesKey, _Entry] = {}
    skipped: dict[str, str] = {}
    values = 0
    for j in joined:
        name = j.request.name
        if name in with_st:
            skipped[name] = "the service sent Server-Timing for it (the more trusted source)"
            continue
        k = math.floor((j.request.t - start) / dt)
        tags = [None, *(f"{key}={value}" for key, value in j.request.tags)]
        for metric, stage, us in _series_of(j):
            for tag in tags:
                key = SeriesKey(metric, name, stage, tag)
                entry = entries.get(key)
                if entry is None:
                    entry = entries[key] = _Entry(key, files.add(key))
                hist = entry.hists.get(k)
                if hist is None:
                    hist = entry.hists[k] = new_histogram()
                if not hist.record_value(us):
                    entry.out_of_range += 1
                values += 1
    for entry in entries.values():
        for k in sorted(entry.hists):
            files.write_interval(start + k * dt, dt, [(entry, entry.hists[k])])
    added = [{"file": e.file, "metric": e.key.metric, "name": e.key.name, "stage": e.key.stage,
              "tag": e.key.tag, "out_of_range": e.out_of_range, "source": "traces",
              **({"total": True} if e.key.stage == SERVER_STAGE else {})}
             for e in entries.values()]
    if added:
        write_json_atomic(index_path, {**index, "series": existing + added})
    return {"names": sorted({e.key.name for e in entries.values()}),
            "skipped_names": skipped, "series": len(added), "values": values}
