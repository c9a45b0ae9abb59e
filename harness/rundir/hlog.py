"""The latency files of a run directory: ``latency/*.hlog``, ``latency/series.json``
and ``intervals.jsonl`` (formats in docs/internals.md), written and read here.

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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from hdrh.histogram import HdrHistogram

from harness.rundir.atomic import write_text_atomic
from harness.rundir.files import bad_line

if TYPE_CHECKING:  # numpy is the reader's (``_sparse``): the load driver writes, never reads
    import numpy as np

__all__ = ["HIGHEST_US", "LOWEST_US", "SIGNIFICANT_FIGURES", "HlogFiles", "HlogInterval",
           "SeriesKey", "new_histogram", "parse_hlog", "series_file_name"]

_START_TIME = re.compile(r"#\[StartTime:\s*([\d.]+)")
_BASE_TIME = re.compile(r"#\[BaseTime:\s*([\d.]+)")
_YEAR_S = 365 * 86400.0


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class SeriesKey(NamedTuple):
    """Identity of a histogram series (see ``latency/series.json``)."""

    metric: str
    name: str
    stage: str | None
    tag: str | None


#: the histogram layout of every series of a run directory: 1 µs .. 1 h, 3 digits
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram with the run directory's fixed range and precision."""
    # Allocating is ~20x cheaper than HdrHistogram.reset() in hdrh 0.10, so intervals
    # get fresh histograms instead of resetting old ones.
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


class Series(Protocol):
    """What the writer needs of a series (the load driver's recorder keeps more)."""

    key: SeriesKey
    file: str
    out_of_range: int


class HlogInterval(NamedTuple):
    """One interval of an hlog, kept sparse (a dense 1 µs .. 1 h histogram is 188 kB).

    ``idx`` are counts-array indexes of the reference histogram layout, ``counts``
    the counts there; ``t`` is the absolute interval start (epoch s), ``dt`` its length.
    """

    t: float
    dt: float
    idx: np.ndarray
    counts: np.ndarray



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
            "lowest_us": LOWEST_US,
            "highest_us": HIGHEST_US,
            "significant_figures": SIGNIFICANT_FIGURES,
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


# Reading: the same format back, into sparse intervals of the run's histogram layout.

def _sparse(decoded: HdrHistogram, ref: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    from harness.stats import counts_array

    counts = counts_array(decoded)
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
            warnings.append(bad_line(rel, number, rows, raw))
            continue
        if start_time is None:
            start_time = offset
        if base_time is None:
            base_time = start_time if offset < start_time - _YEAR_S else 0.0
        idx, counts = _sparse(decoded, ref)
        out.append(HlogInterval(offset + base_time, dt, idx, counts))
    return out, warnings
