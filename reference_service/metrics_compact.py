"""Fold a dead worker's Prometheus files into one archive per metric type.

prometheus_client's multiprocess mode writes ``counter_<pid>.db`` and
``histogram_<pid>.db`` per worker and never removes them when the worker dies (only live
gauges are dropped): with gunicorn's ``max_requests`` recycling the directory, and the work
of every ``/metrics`` scrape, grow without bound (benchmarks/soak.py measured +11 files/min
at 20 req/s with ``--max-requests 200``). ``compact_dead_worker(pid)`` (gunicorn
``child_exit``, in the master) adds the dead worker's values into ``counter_archive.db`` /
``histogram_archive.db`` and deletes its files, so totals are unchanged and the directory
holds the live workers' files plus one archive per type.

The archive is rebuilt in a file that the collector's ``*.db`` glob does not match and
renamed into place; the dead file is deleted right after. A scrape that lists the directory
in the microseconds between the two can count the dead worker twice or (when the file has
gone) fail to open it; ``metrics.exposition`` retries the latter once.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

__all__ = ["compact_dead_worker"]

TYPES = ("counter", "histogram")  # summed across processes; gauges are per pid or dropped


def compact_dead_worker(pid: int, directory: str | Path | None = None) -> int:
    """Fold ``<type>_<pid>.db`` into ``<type>_archive.db``; returns files removed."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return 0
    path = Path(directory)
    removed = 0
    for kind in TYPES:
        dead = path / f"{kind}_{pid}.db"
        if not dead.is_file():
            continue
        archive = path / f"{kind}_archive.db"
        totals: dict[str, tuple[float, float]] = {}
        for source in (archive, dead):
            if source.is_file():
                for key, value, ts, _ in MmapedDict.read_all_values_from_file(str(source)):
                    old, old_ts = totals.get(key, (0.0, 0.0))
                    totals[key] = (old + value, max(old_ts, ts))
        tmp = path / f".{kind}_archive.tmp"  # not *.db: a scrape never reads it half-written
        tmp.unlink(missing_ok=True)
        out = MmapedDict(str(tmp))
        try:
            for key, (value, ts) in totals.items():
                out.write_value(key, value, ts)
        finally:
            out.close()
        os.replace(tmp, archive)
        dead.unlink()
        removed += 1
    return removed
