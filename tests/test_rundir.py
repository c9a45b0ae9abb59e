"""harness.rundir: creating, writing and reading run directories built file by file.

``RunBuilder`` writes the files of docs/internals.md directly (hlogs through
hdrh's HistogramLogWriter, synthetic_runs.write_hlog), so the reader is tested on
exactly the contract. test_summary.py and test_diagnosis_facts.py reuse it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from synthetic_runs import histogram_of, hlog_file_name, write_hlog, write_series_index

from harness import stats
from harness.run.environment import collect_environment
from harness.rundir import (
    SCHEMA_VERSION,
    RunDir,
    RunDirError,
    create_run_dir,
    write_json_atomic,
    write_run_json,
)

T0 = 1_764_121_132.0  # load_start of every built run (epoch s)
RES_COLUMNS = ["t", "pid", "role", "name", "cpu_percent", "rss_bytes", "num_threads",
               "ctx_voluntary", "ctx_involuntary", "num_fds"]


def close(got: float, want: float) -> bool:
    return abs(got - want) <= want * 0.001 + 1


class RunBuilder:
    """Writes a run directory as the driver and collectors would (intervals of 1 s)."""

    def __init__(self, root: Path, model: str = "closed", warmup_s: float = 2.0,
                 duration_s: float = 5.0, rate: float | None = None) -> None:
        self.path = create_run_dir(root, "test", now=T0)
        self.model, self.warmup_s, self.duration_s, self.rate = model, warmup_s, duration_s, rate
        self.entries: list[dict[str, Any]] = []

    def meta(self, status: str = "complete", **timeline: Any) -> dict[str, Any]:
        times = {"created": T0 - 1, "load_start": T0, "measure_start": T0 + self.warmup_s,
                 "planned_load_end": T0 + self.warmup_s + self.duration_s,
                 "load_end": T0 + self.warmup_s + self.duration_s + 0.4}
        times.update(timeline)
        return {
            "harness_version": "0.1.0", "status": status,
            "command_line": ["harness", "run", "scenarios/production.py"],
            "scenario": {"path": "/abs/scenarios/production.py", "sha256": "ab" * 32},
            "target": {"url": "http://127.0.0.1:8000", "served_by_harness": True,
                       "service_options": {"model_versions": {"fraud": "v2"}, "store": "sqlite",
                                           "workers": 2, "faults": []}},
            "load": {"model": self.model, "users": 10, "spawn_rate": 10.0, "rate": self.rate,
                     "arrival": "poisson" if self.model == "open" else None,
                     "duration_s": self.duration_s, "warmup_s": self.warmup_s, "workers": 0,
                     "tags": {"release": "1.4"}},
            "timeline": times,
            "environment": {"hostname": "h", "cpu_logical": 2, "cpu_physical": 1},
            "collectors": {"resources": {"ok": True}}, "notes": [],
        }

    def write_meta(self, status: str = "complete", **timeline: Any) -> None:
        write_run_json(self.path, self.meta(status, **timeline))

    def record(self, metric: str, name: str, by_interval: dict[int, list[int]],
               stage: str | None = None, tag: str | None = None, out_of_range: int = 0,
               sig: int = 3) -> None:
        """Interval k covers [T0 + k, T0 + k + 1); warm-up is k < warmup_s."""
        file = hlog_file_name(metric, name, stage, tag)
        write_hlog(self.path / "latency" / file, T0,
                   [(float(k), 1.0, histogram_of(by_interval[k], sig))
                    for k in sorted(by_interval)])
        self.entries.append({"file": file, "metric": metric, "name": name, "stage": stage,
                             "tag": tag, "out_of_range": out_of_range})
        write_series_index(self.path, T0, self.entries)

    def intervals(self, rows: list[dict[str, Any]]) -> None:
        with (self.path / "intervals.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    def load(self, **fields: Any) -> None:
        doc = {"model": self.model, "target_rps": self.rate, "users": 10,
               "duration_s": self.duration_s, "warmup_s": self.warmup_s,
               "measured": {}, "negative_residuals": 0, "server_timing_missing": 0,
               "server_timing_malformed": 0, "errors": {}, "workers": 1,
               "stopped_early": False, "stop_reason": None}
        doc.update(fields)
        write_json_atomic(self.path / "load.json", doc)

    def resources(self, rows: list[tuple]) -> None:
        with (self.path / "resources.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(RES_COLUMNS)
            for row in rows:
                w.writerow(row)


def test_create_run_dir_name_and_never_overwrites(tmp_path):
    a = create_run_dir(tmp_path, "production", now=T0)
    b = create_run_dir(tmp_path, "production", now=T0)
    assert re.fullmatch(r"20251126-013852-production-[0-9a-f]{4}", a.name)
    assert a != b and a.is_dir() and b.is_dir() and (a / "latency").is_dir()
    assert create_run_dir(tmp_path, "my scenario/../x", now=T0).name.startswith(
        "20251126-013852-my-scenario-..-x-")
    with pytest.raises(ValueError, match=r"label must contain a letter or digit \(got '//'\)"):
        create_run_dir(tmp_path, "//")


def test_write_json_atomic_refuses_nan_and_leaves_no_temp(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"a": float("nan")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_collect_environment_against_independent_sources():
    env = collect_environment()
    import os
    import platform
    import socket

    assert env["hostname"] == socket.gethostname()
    assert env["cpu_logical"] == os.cpu_count()
    assert env["python"]["version"] == platform.python_version()
    assert env["packages"]["hdrhistogram"] and env["packages"]["locust"]
    assert set(env["packages"]) >= {"py-spy", "scikit-learn", "gunicorn", "flask", "numpy"}
    assert env["memory_bytes"] > 0
    if env["git"] is not None:  # this checkout is a git repository
        assert re.fullmatch(r"[0-9a-f]{40}", env["git"]["commit"])
        assert isinstance(env["git"]["dirty"], bool)


def test_run_json_roundtrip_and_schema_violation(tmp_path):
    b = RunBuilder(tmp_path)
    meta = b.meta(status="running")
    meta["environment"] = collect_environment()
    written = write_run_json(b.path, meta)
    rd = RunDir(b.path)
    assert rd.meta == written and rd.meta["schema_version"] == SCHEMA_VERSION
    assert rd.meta["run_id"] == b.path.name and rd.warnings == []
    bad = b.meta(status="finished")
    with pytest.raises(ValueError, match=r"at /status: 'finished' is not one of"):
        write_run_json(b.path, bad)
    bad = b.meta()
    bad["load"]["tags"] = ["no-equals-sign"]
    with pytest.raises(ValueError, match="run.json does not match"):
        write_run_json(b.path, bad)


def test_open_rejects_missing_corrupt_and_newer_schema(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir(tmp_path / "nope")
    b = RunBuilder(tmp_path)
    with pytest.raises(RunDirError, match=r"run.json is missing: not a run directory"):
        RunDir(b.path)
    (b.path / "run.json").write_text('{"schema_version": "1.0", "stat')
    with pytest.raises(RunDirError, match="is not readable JSON"):
        RunDir(b.path)
    doc = b.meta()
    doc["schema_version"] = "2.0"
    (b.path / "run.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError) as info:
        RunDir(b.path)
    assert str(info.value) == (f"run directory {b.path} has schema version 2.0; this harness "
                               "reads 1.x: upgrade the harness")
    doc["schema_version"] = "1.7"  # a newer minor only adds fields: readable
    doc["new_field_from_the_future"] = {"x": 1}
    (b.path / "run.json").write_text(json.dumps(doc))
    assert RunDir(b.path).meta["schema_version"] == "1.7"


def test_histogram_merges_names_exactly_and_skips_warmup(tmp_path):
    b = RunBuilder(tmp_path)  # warm-up 2 s, measured intervals 2..6
    b.write_meta()
    b.record("client", "POST a", {0: [900_000] * 50, 1: [900_000], 2: list(range(1, 501)),
                                  3: list(range(501, 1001)), 6: [5000]})
    b.record("client", "POST b", {4: [2000] * 100})
    b.record("stage", "POST a", {2: [100] * 10}, stage="infer")
    rd = RunDir(b.path)
    a = rd.histogram("client", "POST a")
    assert a.get_total_count() == 1001  # 51 warm-up values left out
    assert stats.percentiles(a, [50, 100]) == {50: 501, 100: 5000 + 3}  # 5000 -> bucket top
    everything = rd.histogram("client")
    assert everything.get_total_count() == 1101
    # exact merge: the same as adding the decoded histograms with hdrh itself
    ref = HdrHistogram(1, 3_600_000_000, 3)
    for file in ("client~POST_a.hlog", "client~POST_b.hlog"):
        reader = HistogramLogReader(str(b.path / "latency" / file), ref)
        while (h := reader.get_next_interval_histogram()) is not None:
            if h.get_start_time_stamp() / 1000.0 >= T0 + 2:
                ref.add(h)
    assert stats.percentiles(everything, [1, 50, 90, 99, 99.9]) == \
        stats.percentiles(ref, [1, 50, 90, 99, 99.9])
    assert rd.histogram("client", "POST a", measured_only=False).get_total_count() == 1052
    assert rd.histogram("stage", "POST a", stage="infer").get_total_count() == 10
    assert rd.histogram("stage", "POST a", stage="fetch").get_total_count() == 0
    assert rd.histogram("client", "POST c").get_total_count() == 0


def test_histograms_of_another_precision_are_moved_into_the_standard_layout(tmp_path):
    b = RunBuilder(tmp_path)
    b.write_meta()
    b.record("client", "A", {2: [12_345] * 3 + [500]}, sig=2)  # 2 digits: 1 % buckets
    b.record("client", "B", {3: [12_345]})
    hist = RunDir(b.path).histogram("client")
    assert hist.get_total_count() == 5
    got = stats.percentiles(hist, [20, 100])
    assert abs(got[20] - 500) <= 500 * 0.01 + 1 and abs(got[100] - 12_345) <= 12_345 * 0.01 + 1


def test_interval_series_flags_warmup(tmp_path):
    b = RunBuilder(tmp_path)
    b.write_meta()
    b.record("client", "A", {1: [10_000] * 4, 2: list(range(1, 101))})
    b.record("client", "B", {2: [1000] * 100, 3: [7]})
    points = RunDir(b.path).interval_series("client", percentiles=(50, 99))
    assert [(p.t - T0, p.warmup, p.samples) for p in points] == [
        (1.0, True, 4), (2.0, False, 200), (3.0, False, 1)]
    assert points[1].percentiles_us == {50: 100, 99: 1000} and points[2].max_us == 7


def test_a_run_that_died_is_read_with_warnings(tmp_path):
    b = RunBuilder(tmp_path)
    b.write_meta(status="running", load_end=None)
    b.record("client", "A", {2: [1000] * 10, 3: [2000] * 10, 4: [3000] * 10})
    hlog = b.path / "latency" / "client~A.hlog"
    text = hlog.read_text()
    hlog.write_text(text[: len(text) - 40])  # the driver died while writing interval 4
    b.intervals([{"t": T0 + k, "dt": 1.0, "warmup": k < 2, "requests": 10, "failures": 1,
                  "errors": {"A|HTTP 503": 1}} for k in range(5)])
    with (b.path / "intervals.jsonl").open("a") as f:
        f.write('{"t": 1764121137.0, "dt": 1.0, "requ')
    b.resources([(T0 + 2, 42, "loadgen", "python", 50.0, 1000, 3, 1, 1, 9),
                 (T0 + 2.25, 42, "loadgen", "python", 60.0, 1000, 3, 1, 1, 9)])
    with (b.path / "resources.csv").open("a") as f:
        f.write(f"{T0 + 2.5},42,loadg")
    rd = RunDir(b.path)
    assert rd.histogram("client").get_total_count() == 20
    assert len(rd.intervals()) == 5
    load = rd.load()
    assert load["source"] == "intervals.jsonl" and load["stopped_early"] is True
    assert load["measured"]["requests"] == 30 and load["measured"]["failures"] == 3
    assert load["errors"] == {"A|HTTP 503": 3}
    assert len(rd.resources()) == 2 and rd.resources()[1].cpu_percent == 60.0
    assert rd.measured_span() == (T0 + 2, T0 + 5, 3.0)
    joined = " | ".join(rd.warnings)
    assert "latency/client~A.hlog: truncated last line; skipped" in joined
    assert "intervals.jsonl: truncated last line; skipped" in joined
    assert "load.json is missing" in joined
    assert "resources.csv: row 4 is malformed or truncated" in joined
    assert rd.profile_status() is None and rd.read_json("summary.json") is None


def test_shipped_schemas_are_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    from harness.rundir import load_schema

    for name in ("run", "summary"):
        Draft202012Validator.check_schema(load_schema(name))
        assert load_schema(name)["$schema"].endswith("/draft/2020-12/schema")
