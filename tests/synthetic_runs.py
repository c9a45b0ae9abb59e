"""Run directories built from given latency values with the project's own writers.

``make_run`` writes run.json (validated by write_run_json), the hlog files and
series.json (HlogFiles, as the load driver does), load.json and intervals.jsonl, so
the analysis commands read exactly the format a real run leaves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hdrh.histogram import HdrHistogram

from harness.rundir import RunDir, write_json_atomic, write_run_json
from harness.rundir.hlog import HlogFiles, SeriesKey

T0 = 1_700_000_000.0


@dataclass
class _Series:
    key: SeriesKey
    file: str
    out_of_range: int = 0


def histogram_of(values: np.ndarray) -> HdrHistogram:
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in np.asarray(values, dtype=np.int64):
        if not h.record_value(int(v)):
            raise ValueError(f"value out of the histogram's range (got {v})")
    return h


def make_run(path: Path, series: dict[tuple[str, str, str | None], np.ndarray],
             seconds: float = 10.0, environment: dict | None = None,
             load: dict | None = None, t0: float = T0) -> RunDir:
    """A complete run: (metric, name, stage) -> values in µs, all in the measured window;
    ``t0``: when its load started (epoch s)."""
    T0 = t0  # noqa: N806 (the module's default start, per run)
    path.mkdir(parents=True)
    load_settings = {"model": "closed", "users": 4, "duration_s": seconds, "warmup_s": 0.0,
                     **(load or {})}
    write_run_json(path, {
        "harness_version": "test", "status": "complete", "command_line": ["test"],
        "scenario": {"path": "/synthetic.py", "sha256": "0" * 64}, "target": {},
        "load": load_settings,
        "timeline": {"created": T0, "load_start": T0, "measure_start": T0,
                     "load_end": T0 + seconds},
        "environment": environment or {"hostname": "h", "cpu_model": "c", "cpu_logical": 2},
        "collectors": {}, "notes": []})
    files = HlogFiles(path, T0, seconds)
    written = []
    for (metric, name, stage), values in series.items():
        key = SeriesKey(metric, name, stage, None)
        entry = _Series(key, files.add(key))
        files.write_interval(T0, seconds, [(entry, histogram_of(values))])
        written.append(entry)
    files.write_index(written, force=True)
    n = sum(len(v) for (m, _, _), v in series.items() if m in ("client", "client_failed"))
    failed = sum(len(v) for (m, _, _), v in series.items() if m == "client_failed")
    files.append_interval({"t": T0, "dt": seconds, "warmup": False, "requests": n,
                           "failures": failed})
    write_json_atomic(path / "load.json", {
        "model": load_settings["model"], "measured": {"requests": n, "failures": failed},
        "timeline": {"load_start": T0, "measure_start": T0, "load_end": T0 + seconds}})
    json.loads((path / "load.json").read_text())  # written whole (atomic), readable
    return RunDir(path)
