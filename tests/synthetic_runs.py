"""Run directories built from given latency values, for the analysis commands' tests.

The latency files are written with hdrh's own encoder and log writer
(``hdrh.log.HistogramLogWriter``), not with the product's ``HlogFiles``: the analysis
then reads the standard format, and a bug shared by the product's writer and its reader
cannot hide. ``write_hlog`` and ``write_series_index`` are the one writer of latency files
for the tests: ``make_run`` below and ``RunBuilder`` (test_rundir.py) both use them.

``make_run`` writes run.json (validated by write_run_json), the hlog files and
series.json, load.json and intervals.jsonl of a complete run whose values all lie in
one measured interval.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from harness.rundir import RunDir, write_json_atomic, write_run_json

T0 = 1_700_000_000.0
LOWEST_US, HIGHEST_US = 1, 3_600_000_000


def histogram_of(values: Iterable[int], sig: int = 3) -> HdrHistogram:
    h = HdrHistogram(LOWEST_US, HIGHEST_US, sig)
    for v in np.asarray(list(values), dtype=np.int64):
        if not h.record_value(int(v)):
            raise ValueError(f"value out of the histogram's range (got {v})")
    return h


def hlog_file_name(metric: str, name: str, stage: str | None = None,
                   tag: str | None = None) -> str:
    return "~".join(x.replace(" ", "_").replace("/", "_")
                    for x in (metric, name, stage, tag) if x) + ".hlog"


def write_hlog(path: Path, start_time: float,
               intervals: Iterable[tuple[float, float, HdrHistogram]]) -> None:
    """An HdrHistogram interval log written by hdrh itself: a StartTime header (epoch s),
    a legend, then one line per (offset from start_time in s, length in s, histogram)."""
    stamp = datetime.fromtimestamp(start_time, tz=UTC).isoformat(sep=" ")
    with path.open("w") as f:
        f.write(f"#[StartTime: {start_time:.3f} (seconds since epoch), {stamp}]\n")
        writer = HistogramLogWriter(f)
        writer.output_legend()
        for offset, length, hist in intervals:
            # hdrh's writer takes a zero start offset for "unset" and uses the histogram's
            # own (empty) timestamp instead: a nanosecond keeps the first interval at 0.
            writer.output_interval_histogram(hist, offset or 1e-9, offset + length, 1.0)


def write_series_index(run_dir: Path, start_time: float, entries: list[dict[str, Any]],
                       interval_s: float = 1.0) -> None:
    """latency/series.json for ``entries`` ({file, metric, name, stage, tag, out_of_range})."""
    write_json_atomic(run_dir / "latency" / "series.json", {
        "interval_s": interval_s, "start_time": start_time, "lowest_us": LOWEST_US,
        "highest_us": HIGHEST_US, "significant_figures": 3, "series": entries})


def make_run(path: Path, series: dict[tuple[str, str, str | None], np.ndarray],
             seconds: float = 10.0, environment: dict | None = None,
             load: dict | None = None, t0: float = T0) -> RunDir:
    """A complete run: (metric, name, stage) -> values in µs, all in the measured window;
    ``t0``: when its load started (epoch s)."""
    T0 = t0  # noqa: N806 (the module's default start, per run)
    path.mkdir(parents=True)
    (path / "latency").mkdir()
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
    entries = []
    for (metric, name, stage), values in series.items():
        file = hlog_file_name(metric, name, stage)
        write_hlog(path / "latency" / file, T0, [(0.0, seconds, histogram_of(values))])
        entries.append({"file": file, "metric": metric, "name": name, "stage": stage,
                        "tag": None, "out_of_range": 0})
    write_series_index(path, T0, entries, interval_s=seconds)
    n = sum(len(v) for (m, _, _), v in series.items() if m in ("client", "client_failed"))
    failed = sum(len(v) for (m, _, _), v in series.items() if m == "client_failed")
    (path / "intervals.jsonl").write_text(json.dumps(
        {"t": T0, "dt": seconds, "warmup": False, "requests": n, "failures": failed}) + "\n")
    write_json_atomic(path / "load.json", {
        "model": load_settings["model"], "measured": {"requests": n, "failures": failed},
        "timeline": {"load_start": T0, "measure_start": T0, "load_end": T0 + seconds}})
    return RunDir(path)
