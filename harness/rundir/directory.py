"""The run directory: create it, write run.json, and read everything back.

A run directory is the product's central artifact; everything after a run reads
only it (docs/run-directory.md documents every file). The reader is tolerant of a
run that died: a missing load.json or a truncated last line of a log costs only
what was not written, and every such repair is recorded in ``RunDir.warnings``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import numpy as np
from hdrh.histogram import HdrHistogram
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from harness import stats
from harness.rundir.atomic import write_text_atomic
from harness.rundir.files import ResourceSample, parse_jsonl, parse_resources_csv, rebuild_load
from harness.rundir.hlog import HlogInterval, parse_hlog
from harness.rundir.trust import (
    MAX_JSON_BYTES,
    MAX_LOG_BYTES,
    drop_invalid,
    read_bounded,
    series_entry_problem,
)

__all__ = ["SCHEMA_VERSION", "IntervalPoint", "ResourceSample", "RunDir", "RunDirError",
           "create_run_dir", "load_schema", "schema_errors",
           "write_json_atomic", "write_run_json"]

SCHEMA_VERSION = "1.0"
SUPPORTED_MAJOR = 1
STATUSES = ("running", "complete", "degraded", "incomplete", "failed")
_SCHEMAS = Path(__file__).resolve().parent / "schemas"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_EPS_S = 1e-3  # interval starts are written with µs precision; allow float noise


class RunDirError(Exception):
    """A run directory that cannot be read (missing/corrupt run.json, newer schema)."""


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in harness/schemas (``"run"`` or ``"summary"``)."""
    return json.loads((_SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def schema_errors(obj: Any, name: str) -> list[str]:
    """Human-readable schema violations of ``obj`` (empty when valid), best first."""
    validator = Draft202012Validator(load_schema(name))
    errors = list(validator.iter_errors(obj))
    if not errors:
        return []
    first = best_match(errors)
    ordered = [first] + [e for e in errors if e is not first]
    return [f"at /{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in ordered]


def create_run_dir(out: Path, label: str, now: float | None = None) -> Path:
    """Create ``out/<UTC yyyymmdd-HHMMSS>-<label>-<4 hex>``; never reuses an existing one."""
    clean = _LABEL_BAD.sub("-", str(label)).strip("-.")[:48]
    if not clean:
        raise ValueError(f"label must contain a letter or digit (got {label!r})")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    Path(out).mkdir(parents=True, exist_ok=True)
    for _ in range(64):
        path = Path(out) / f"{stamp}-{clean}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "latency").mkdir()
        return path
    raise RunDirError(f"could not find a free run directory name under {out} for {stamp}-{clean}")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temporary file + rename, so readers never see half a file.

    NaN and infinity are refused (ValueError): they are not JSON and would hide a bug.
    """
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n", fsync=True)


def write_run_json(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Validate ``meta`` against run.schema.json and write it as run.json (atomically).

    ``schema_version`` and ``run_id`` are filled in when absent; returns what was written.
    Raises ValueError naming the first violation.
    """
    run_dir = Path(run_dir)
    doc = {"schema_version": SCHEMA_VERSION, "run_id": run_dir.name, **meta}
    problems = schema_errors(doc, "run")
    if problems:
        raise ValueError(f"run.json does not match run.schema.json {problems[0]}")
    write_json_atomic(run_dir / "run.json", doc)
    return doc


class IntervalPoint(NamedTuple):
    """Latency of one interval of a merged series (µs); percentiles keyed like 99.9."""

    t: float
    dt: float
    warmup: bool
    samples: int
    max_us: int | None
    percentiles_us: dict[float, int]


class RunDir:
    """Read a run directory. Opening checks run.json; everything else is read lazily."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        run_json = self.path / "run.json"
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist")
        try:
            meta = json.loads(run_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{run_json} is missing: not a run directory") from None
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{run_json} is not readable JSON ({exc})") from None
        version = meta.get("schema_version") if isinstance(meta, dict) else None
        match = re.fullmatch(r"(\d+)\.(\d+)", str(version)) if version is not None else None
        if match is None:
            raise RunDirError(f"{run_json} has no valid schema_version (got {version!r})")
        if int(match.group(1)) > SUPPORTED_MAJOR:
            raise RunDirError(
                f"run directory {self.path} has schema version {version}; this harness reads "
                f"{SUPPORTED_MAJOR}.x: upgrade the harness")
        for problem in schema_errors(meta, "run")[:3]:
            self.warnings.append(f"run.json does not match its schema {problem}")
        dropped = drop_invalid(meta, load_schema("run"))
        if dropped:
            self.warnings.append("run.json: fields of the wrong shape ignored: "
                                 + "; ".join(dropped[:5]))
        self.meta: dict[str, Any] = meta
        self._index: dict[str, Any] | None = None
        self._lines: dict[str, list[HlogInterval]] = {}
        self._intervals: list[dict[str, Any]] | None = None
        self._window: tuple[float, float | None] | None = None

    # -- small files --------------------------------------------------------------
    def _read_text(self, rel: str, limit: int) -> str | None:
        return read_bounded(self.path, rel, limit, self._warn)

    def _json(self, rel: str) -> Any | None:
        raw = self._read_text(rel, MAX_JSON_BYTES)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            self._warn(f"{rel} is not readable JSON ({exc}); ignored")
            return None

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def series_index(self) -> dict[str, Any]:
        """latency/series.json (with defaults when it is missing)."""
        if self._index is None:
            index = self._json("latency/series.json")
            if not isinstance(index, dict):
                if index is None:
                    self._warn("latency/series.json is missing: no latency was recorded")
                index = {}
            defaults = {"series": [], "interval_s": 1.0, "lowest_us": 1,
                        "highest_us": 3_600_000_000, "significant_figures": 3}
            for key, default in defaults.items():
                value = index.get(key, default)
                ok = isinstance(value, list) if key == "series" else \
                    isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and value > 0
                if not ok:
                    self._warn(f"latency/series.json: {key} is not valid (got "
                               f"{str(value)[:40]}); the default is used")
                    value = default
                index[key] = value
            if not (1 <= index["lowest_us"] < index["highest_us"] <= 2**62
                    and 1 <= index["significant_figures"] <= 5):
                self._warn("latency/series.json: histogram layout out of range; the default "
                           "1 us .. 1 h, 3 digits is used")
                index.update(lowest_us=1, highest_us=3_600_000_000, significant_figures=3)
            usable = []
            for entry in index["series"]:
                problem = series_entry_problem(entry)
                if problem:
                    self._warn(f"latency/series.json: series ignored: {problem}")
                else:
                    usable.append(entry)
            index["series"] = usable
            self._index = index
        return self._index

    def series(self) -> list[dict[str, Any]]:
        """The series entries of latency/series.json (file, metric, name, stage, tag…)."""
        return list(self.series_index()["series"])

    def read_json(self, rel: str) -> dict[str, Any] | None:
        """A JSON object file of the run (``"resources.json"``, ``"driver.json"``…) or None."""
        found = self._json(rel)
        return found if isinstance(found, dict) else None

    def saved_summary(self) -> dict[str, Any] | None:
        """summary.json when present and valid against summary.schema.json, else None (with
        a warning when it exists): callers then compute the summary from the raw files."""
        doc = self._json("summary.json")
        if doc is None:
            return None
        problems = schema_errors(doc, "summary") if isinstance(doc, dict) else \
            [f"it is a {type(doc).__name__}, not an object"]
        if problems:
            self._warn(f"summary.json does not match its schema {problems[0]}; recomputed "
                       "from the raw files")
            return None
        return doc

    def profile_status(self) -> dict[str, Any] | None:
        """profile/status.json, or None when the profiler did not run."""
        return self.read_json("profile/status.json")

    # -- the measured window --------------------------------------------------------
    def window(self) -> tuple[float, float | None]:
        """(measure_start, load_end) in epoch s; load_end is None for a run that died."""
        if self._window is None:
            self._window = self._find_window()
        return self._window

    def _find_window(self) -> tuple[float, float | None]:
        timeline = self.meta.get("timeline") or {}
        start = timeline.get("measure_start")
        if start is None:
            base = self.series_index().get("start_time") or timeline.get("load_start")
            warmup = (self.meta.get("load") or {}).get("warmup_s") or 0.0
            start = float(base) + warmup if _number(base) else None
        if start is None:
            first = [iv["t"] for iv in self.intervals() if not iv.get("warmup")]
            start = min(first) if first else -math.inf
        # The driver's own load_end is exact; the orchestrator's comes after the driver exits.
        driver_timeline = (self.read_json("load.json") or {}).get("timeline")
        driver_end = driver_timeline.get("load_end") if isinstance(driver_timeline, dict) \
            else None
        end = driver_end if _number(driver_end) else timeline.get("load_end")
        return float(start), (float(end) if end is not None else None)

    def in_window(self, t: float) -> bool:
        """Whether an interval starting at t (epoch s) belongs to the measured window."""
        start, end = self.window()
        return t >= start - _EPS_S and (end is None or t < end - _EPS_S)

    def measured_span(self) -> tuple[float, float, float]:
        """(start, end, seconds) of the measured window, ending at the last measured interval."""
        start, end = self.window()
        ends = [iv["t"] + iv.get("dt", 0.0) for iv in self.intervals()
                if self.in_window(iv["t"])]
        if not ends:
            ends = [ln.t + ln.dt for s in self.series() for ln in self._read_hlog(s["file"])
                    if self.in_window(ln.t)]
        last = max(ends) if ends else start
        stop = min(last, end) if end is not None else last
        return start, stop, max(0.0, stop - start) if math.isfinite(start) else 0.0

    # -- latency ---------------------------------------------------------------------
    def _template(self) -> HdrHistogram:
        index = self.series_index()
        return HdrHistogram(int(index["lowest_us"]), int(index["highest_us"]),
                            int(index["significant_figures"]))

    def _read_hlog(self, file: str) -> list[HlogInterval]:
        if file not in self._lines:
            rel = f"latency/{file}"
            raw = self._read_text(rel, MAX_LOG_BYTES)
            if raw is None:
                self._warn(f"{rel} is missing or unreadable; series ignored")
                raw = ""
            self._lines[file], warnings = parse_hlog(raw, rel, self._template())
            for w in warnings:
                self._warn(w)
        return self._lines[file]

    def _select(self, metric: str, name: str | None, stage: str | None,
                tag: str | None) -> list[dict[str, Any]]:
        return [s for s in self.series()
                if s.get("metric") == metric and (name in ("*", None) or s.get("name") == name)
                and s.get("stage") == stage and s.get("tag") == tag]

    def _to_histogram(self, dense: np.ndarray) -> HdrHistogram:
        hist = self._template()
        np.ctypeslib.as_array(hist.counts)[: hist.counts_len] = dense[: hist.counts_len]
        nz = np.flatnonzero(dense)
        if len(nz):
            hist.set_internal_tacking_values(int(nz[0]), int(nz[-1]), int(dense.sum()))
        return hist

    def histogram(self, metric: str, name: str | None = "*", stage: str | None = None,
                  tag: str | None = None, measured_only: bool = True) -> HdrHistogram:
        """Exact sum of the interval histograms of the matching series (µs).

        ``name="*"`` merges all request names; ``tag=None`` selects untagged series
        only. With ``measured_only`` warm-up intervals and anything after load_end
        are left out. No matching series gives an empty histogram.
        """
        dense = np.zeros(self._template().counts_len, dtype=np.int64)
        for entry in self._select(metric, name, stage, tag):
            for line in self._read_hlog(entry["file"]):
                if not measured_only or self.in_window(line.t):
                    dense[line.idx] += line.counts
        return self._to_histogram(dense)

    histograms = histogram  # the first spelling in docs/internals.md (name=None means "*")

    def interval_histograms(self, metric: str, name: str = "*", stage: str | None = None,
                            tag: str | None = None) -> list[tuple[float, float, HdrHistogram]]:
        """(start, length, histogram) per interval, all names merged, warm-up included."""
        merged: dict[int, tuple[float, float, np.ndarray]] = {}
        size = self._template().counts_len
        for entry in self._select(metric, name, stage, tag):
            for line in self._read_hlog(entry["file"]):
                key = round(line.t * 1000)
                if key not in merged:
                    merged[key] = (line.t, line.dt, np.zeros(size, dtype=np.int64))
                merged[key][2][line.idx] += line.counts
        return [(t, dt, self._to_histogram(d)) for t, dt, d in
                (merged[k] for k in sorted(merged))]

    def interval_series(self, metric: str, name: str = "*", stage: str | None = None,
                        tag: str | None = None, percentiles: tuple[float, ...] = (50, 90, 99, 99.9)
                        ) -> list[IntervalPoint]:
        """Per-interval percentiles for plots; warm-up intervals are flagged, not dropped."""
        start, _ = self.window()
        points = []
        for t, dt, hist in self.interval_histograms(metric, name, stage, tag):
            d = stats.describe(hist, percentiles)
            points.append(IntervalPoint(t, dt, t < start - _EPS_S, d.count, d.max_us,
                                        d.percentiles_us))
        return points

    # -- driver, resources ----------------------------------------------------------
    def intervals(self) -> list[dict[str, Any]]:
        """intervals.jsonl, one dict per complete line, in file order."""
        if self._intervals is None:
            raw = self._read_text("intervals.jsonl", MAX_LOG_BYTES) or ""
            self._intervals, warnings = parse_jsonl(raw, "intervals.jsonl")
            for w in warnings:
                self._warn(w)
        return self._intervals

    def load(self) -> dict[str, Any]:
        """load.json, or when the driver died, totals rebuilt from the measured intervals."""
        load = self._json("load.json")
        if isinstance(load, dict):
            return {**load, "source": "load.json"}
        self._warn("load.json is missing or unreadable: totals rebuilt from intervals.jsonl")
        measured = [iv for iv in self.intervals() if self.in_window(iv["t"])]
        return rebuild_load(self.meta.get("load") or {}, measured, self.measured_span()[2])

    def resources(self) -> list[ResourceSample]:
        """resources.csv as typed rows; malformed rows are skipped with a warning."""
        raw = self._read_text("resources.csv", MAX_LOG_BYTES)
        if raw is None:
            return []
        rows, warnings = parse_resources_csv(raw)
        for w in warnings:
            self._warn(w)
        return rows


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
