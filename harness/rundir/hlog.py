"""The latency files of a run directory: ``latency/*.hlog``, ``latency/series.json``
and ``intervals.jsonl`` (formats in docs/internals.md).

``.hlog`` is the standard HdrHistogram interval log (version 1.2), as Java's
``HistogramLogWriter`` writes it: a ``#[StartTime: …]`` header with epoch seconds, a
``#[BaseTime: …]`` equal to it (so that readers never mistake the small offsets for
absolute times), a legend, then ``start_offset,interval_length,interval_max,HISTFAAA…``
lines with offsets relative to StartTime. Both ``hdrh.log.HistogramLogReader`` and Java's
``HistogramLogProcessor`` read it. (hdrh's own ``output_start_time`` is broken in 0.10.8,
and its writer drops a zero start offset, so lines are written here directly.)

Every write is opened, appended and closed, so a driver that dies keeps every interval
it finished, and a run with hundreds of tagged series never runs out of descriptors.

Import-safe: no Locust, no gevent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from harness.rundir.atomic import write_text_atomic

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

    from harness.load.recorder import Series

__all__ = ["HlogFiles", "SeriesKey", "series_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class SeriesKey(NamedTuple):
    """Identity of a histogram series (see ``latency/series.json``)."""

    metric: str
    name: str
    stage: str | None
    tag: str | None


def _safe(part: str) -> str:
    if part == "*":
        return "all"
    safe = _UNSAFE.sub("_", part).strip("_") or "_"
    if len(safe) > 60:
        # Long names stay unique and readable: a prefix plus a digest of the whole.
        safe = safe[:48] + "-" + hashlib.sha1(part.encode()).hexdigest()[:10]
    return safe


def series_file_name(key: SeriesKey) -> str:
    """``client~POST_predict_fraud~input_class=null_features.hlog`` style file name."""
    parts = [key.metric, _safe(key.name)]
    if key.stage is not None:
        parts.append(_safe(key.stage))
    if key.tag is not None:
        parts.append(_safe(key.tag))
    return "~".join(parts) + ".hlog"


class HlogFiles:
    """Writes the latency files of one run directory."""

    def __init__(self, run_dir: Path, start_time: float, interval_s: float) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "latency"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.intervals_path = self.run_dir / "intervals.jsonl"
        self.start_time = start_time
        self.interval_s = interval_s
        self._used: set[str] = set()
        self._dirty = True
        self._index_oor: dict[str, int] = {}

    def add(self, key: SeriesKey) -> str:
        """Start the hlog file of a new series; returns its file name."""
        file = series_file_name(key)
        n = 2
        while file in self._used:
            # "POST /a" and "POST_a" sanitise to the same name: keep both, distinctly.
            file = series_file_name(key)[: -len(".hlog")] + f"~{n}.hlog"
            n += 1
        self._used.add(file)
        stamp = datetime.fromtimestamp(self.start_time, tz=UTC)
        header = (
            "#[Histogram log format version 1.2]\n"
            f"#[StartTime: {self.start_time:.6f} (seconds since epoch), "
            f"{stamp.isoformat(sep=' ', timespec='milliseconds')}]\n"
            f"#[BaseTime: {self.start_time:.6f} (seconds since epoch)]\n"
            f"#[Series: {json.dumps(list(key))}]\n"
            '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n'
        )
        with open(self.dir / file, "w", encoding="utf-8") as fh:
            fh.write(header)
        self._dirty = True
        return file

    def write_interval(
        self, start: float, dt: float, items: Iterable[tuple[Series, HdrHistogram]]
    ) -> None:
        """One hlog line per series with values; ``Interval_Max`` in milliseconds."""
        offset = start - self.start_time
        for series, hist in items:
            line = (
                f"{offset:.3f},{dt:.3f},{hist.get_max_value() / 1000.0:.3f},"
                f"{hist.encode().decode('ascii')}\n"
            )
            with open(self.dir / series.file, "a", encoding="utf-8") as fh:
                fh.write(line)

    def write_index(self, series: Iterable[Series], force: bool = False) -> None:
        """Rewrite series.json atomically when a series appeared or a count changed."""
        series = list(series)
        oor = {s.file: s.out_of_range for s in series}
        if not (force or self._dirty or oor != self._index_oor):
            return
        doc = {
            "interval_s": self.interval_s,
            "start_time": self.start_time,
            "lowest_us": 1,
            "highest_us": 3_600_000_000,
            "significant_figures": 3,
            "series": [
                {"file": s.file, "metric": s.key.metric, "name": s.key.name,
                 "stage": s.key.stage, "tag": s.key.tag, "out_of_range": s.out_of_range}
                for s in series
            ],
        }
        path = self.dir / "series.json"
        write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
        self._dirty = False
        self._index_oor = oor

    def append_interval(self, record: dict[str, Any]) -> None:
        with open(self.intervals_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
