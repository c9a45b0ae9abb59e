"""The typed records of the run directory (harness.rundir.records): summary.json and
load.json round-trip exactly, match their JSON Schemas, and old or partial files read."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_rundir import T0, RunBuilder
from test_summary import closed_run, open_run

from harness.analysis.summary import format_summary, summarize, summarize_record
from harness.rundir import RunDir, schema_errors
from harness.rundir.records import (
    Breakdown,
    CheckEntry,
    Latencies,
    LatencyBlock,
    Lateness,
    LoadBlock,
    LoadgenResources,
    LoadReport,
    Measured,
    ProcessCPU,
    ProfileStatus,
    ProfileView,
    RequestRow,
    Resources,
    SeriesEntry,
    ServiceResources,
    StageRow,
    Summary,
    SystemResources,
    TagRow,
    Window,
)


def _block(**kw: object) -> dict:
    return {"count": 10, "min_us": 5, "max_us": 90, "mean_us": 20.5, "p50_us": 10,
            "p90_us": 50, "p95_us": 60, "p99_us": 80, "p999_us": 90, "low_samples": ["p999"],
            **kw}


def hand_summary() -> Summary:
    """Every optional part present: open model, tags, stages, resources, profile."""
    block = LatencyBlock(**{**_block(), "low_samples": ("p999",)})
    stage = StageRow(**{**_block(), "low_samples": ()}, stage="infer", share=0.6)
    row = {"count": 12, "rps": 2.4, "failures": 2, "fail_pct": 16.6667,
           "latency": Latencies(block, block)}
    worker = ProcessCPU(7, "service_worker", 40.0, 55.5, 60.0, 0.0)
    return Summary(
        schema_version="1.0", run_id="r1", status="complete", generated_at=1.5, model="open",
        window=Window(T0, T0 + 5, 5.0, 5.0), percentiles=(50, 90, 95, 99, 99.9),
        confidence=0.95, min_samples={"p50": 5, "p90": 29, "p95": 59, "p99": 299, "p999": 2995},
        load=LoadBlock(source="load.json", target_rps=2.5, nominal_rps=2.0, achieved_rps=2.4,
                       users=3, workers=1, scheduled=13, started=12, late=1, dropped=1,
                       stopped_early=False, stop_reason=None, lateness=Lateness(10, 90, None)),
        requests=(RequestRow(name="A", errors={"HTTP 503": 2}, **row),
                  RequestRow(name="*", errors={"HTTP 503": 2}, **row)),
        tags=(TagRow(tag="input_class=ood", key="input_class", value="ood", **row),),
        stages={"*": Breakdown(30.0, 20.0, "app", (stage,), StageRow(**_block(), share=0.3),
                               0.1, 10.0)},
        resources=Resources(20, 2, ServiceResources(50.0, 60.0, 70.0, (worker,), 1, 3, 4, 2),
                            LoadgenResources(20.0, 30.0, (worker,)),
                            SystemResources(70.0, 80.0, 90.0),
                            {"service": 0.25, "loadgen": None}),
        profile={"oncpu": ProfileView(100, {"infer": 0.9, "other": 0.1})},
        self_check=(CheckEntry.judged("measured_data", True, "error", "12 requests"),
                    CheckEntry.judged("loadgen_cpu", False, "warning", "no samples")),
        ok=True, warnings=("a warning",))


def test_a_summary_built_by_hand_round_trips_and_matches_the_schema() -> None:
    s = hand_summary()
    d = s.to_dict()
    assert schema_errors(d, "summary") == []
    assert Summary.from_dict(d) == s
    assert Summary.from_dict(json.loads(json.dumps(d))) == s  # through the file format
    assert Summary.from_dict(d).to_dict() == d
    assert s.total.name == "*" and [r.name for r in s.named] == ["A"]
    assert s.stages["*"].stage("infer").p99_us == 80
    assert s.self_check[0].severity == "info" and s.self_check[1].severity == "warning"


@pytest.mark.parametrize("build", [closed_run, open_run])
def test_summarize_output_round_trips_exactly(tmp_path, build) -> None:
    rd = RunDir(build(tmp_path).path)
    d = summarize(rd, write=False)
    s = Summary.from_dict(d)
    assert s.to_dict() == d
    assert Summary.from_dict(s.to_dict()) == s
    record = summarize_record(rd)
    assert dataclasses.replace(record, generated_at=s.generated_at) == s
    assert format_summary(record) == format_summary(d)


def test_an_old_summary_without_the_later_keys_reads() -> None:
    d = hand_summary().to_dict()
    for key in ("nominal_rps", "lateness_p50_us", "lateness_p99_us", "lateness_max_us"):
        del d["load"][key]
    del d["profile"]
    del d["stages"]["*"]["schedule_delay_us"]
    s = Summary.from_dict(d)
    assert s.load.nominal_rps == 2.5  # the target was the nominal rate then
    assert s.load.lateness is None and s.profile is None
    assert s.stages["*"].schedule_delay_us is None
    assert Summary.from_dict(s.to_dict()) == s


def test_a_malformed_summary_names_the_place() -> None:
    d = hand_summary().to_dict()
    del d["requests"][1]["count"]
    with pytest.raises(ValueError, match=r"requests\[1\] has no 'count'"):
        Summary.from_dict(d)
    with pytest.raises(ValueError, match="must be an object"):
        Summary.from_dict([])
    d = hand_summary().to_dict()
    d["requests"] = d["requests"][:1]
    with pytest.raises(ValueError, match="named '\\*'"):
        Summary.from_dict(d)


def test_records_check_what_they_hold() -> None:
    with pytest.raises(ValueError, match="severity must be one of"):
        CheckEntry("x", False, "critical", "d")
    with pytest.raises(ValueError, match="count must be >= 0"):
        LatencyBlock(count=-1)
    block = LatencyBlock(count=3, p99_us=7, low_samples=("p99",))
    assert block.percentile_us("p99") == 7 and block.is_low("p99")
    with pytest.raises(ValueError, match="percentile key must be one of"):
        block.percentile_us("p98")
    assert CheckEntry.judged("c", False, "error", "d").is_error
    assert not CheckEntry.judged("c", True, "error", "d").is_error


DRIVER_LOAD = {
    "model": "open", "arrival": "poisson", "target_rps": 39.6, "nominal_rps": 40.0,
    "rate_shape": None, "users": 40, "duration_s": 20.0, "warmup_s": 2.0,
    "measured": {"requests": 790, "failures": 3, "achieved_rps": 39.5, "scheduled": 792,
                 "started": 791, "late": 4, "dropped": 1, "late_threshold_us": 1000},
    "negative_residuals": 0, "server_timing_missing": 0, "server_timing_malformed": 0,
    "unanswered": 2, "unanswered_long": 0, "errors": {"POST predict fraud|HTTP 503": 3},
    "out_of_range": 0, "workers": 1, "stopped_early": False, "stop_reason": None,
    "timeline": {"load_start": T0, "measure_start": T0 + 2, "planned_load_end": T0 + 22,
                 "load_end": T0 + 22.1},
}


def test_load_json_as_the_driver_writes_it_round_trips_and_matches_its_schema() -> None:
    assert schema_errors(DRIVER_LOAD, "load") == []
    lr = LoadReport.from_dict(DRIVER_LOAD)
    assert lr.to_dict() == DRIVER_LOAD
    assert LoadReport.from_dict(lr.to_dict()) == lr
    assert lr.measured.dropped == 1 and lr.unanswered == 2 and lr.nominal_rps == 40.0
    distributed = {**DRIVER_LOAD, "workers": 2, "workers_reported": 2, "future_key": [1]}
    lr = LoadReport.from_dict(distributed)
    assert lr.workers_reported == 2 and lr.extra == {"future_key": [1]}
    assert lr.to_dict() == distributed  # a key this version does not know is kept


def test_load_json_rebuilt_from_intervals_and_old_files_read(tmp_path) -> None:
    b = RunBuilder(tmp_path)
    b.write_meta()
    b.record("client", "A", {2: [1000] * 10})
    b.intervals([{"t": T0 + k, "dt": 1.0, "warmup": k < 2, "requests": 10, "failures": 0}
                 for k in range(4)])
    raw = RunDir(b.path).load()  # no load.json: rebuilt from intervals.jsonl
    lr = LoadReport.from_dict(raw)
    assert lr.source == "intervals.jsonl" and lr.stopped_early is True
    assert lr.negative_residuals == 0 and lr.unanswered is None  # not counted: not a check
    assert LoadReport.from_dict(lr.to_dict()) == lr
    assert schema_errors(lr.to_dict(), "load") == []
    old = {k: v for k, v in DRIVER_LOAD.items()
           if k not in ("nominal_rps", "unanswered", "unanswered_long")}
    lr = LoadReport.from_dict(old)
    assert lr.nominal_rps == old["target_rps"] and lr.unanswered is None
    assert LoadReport.from_dict(lr.to_dict()) == lr
    with pytest.raises(ValueError, match="load.json"):
        LoadReport.from_dict({**DRIVER_LOAD, "negative_residuals": "many"})
    assert LoadReport(errors={"a|HTTP 500": 1, "a|ReadTimeout": 2, "b|ReadTimeout": 1}
                      ).transport_errors == {"ReadTimeout": 3}
    assert Measured.from_dict({}).to_dict() == {"requests": None, "failures": None,
                                                "achieved_rps": None}


def test_series_entries_and_profile_status() -> None:
    s = SeriesEntry.from_dict({"file": "stage~A~infer.hlog", "metric": "stage", "name": "A",
                               "stage": "infer", "tag": None, "out_of_range": 2})
    assert s.stage == "infer" and s.out_of_range == 2 and not s.is_request
    assert SeriesEntry.from_dict(s.to_dict()) == s
    p = ProfileStatus.from_dict({"ok": True, "samples": 10, "rate_hz": 100, "lag_s": 0.5,
                                 "window": {"start": 1.0, "end": 3.5}})
    assert (p.samples, p.max_lag_s, p.window_s) == (10, 0.5, 2.5)
    assert ProfileStatus.from_dict({}).ok is False
    with pytest.raises(ValueError, match="profile/status.json: window must be an object"):
        ProfileStatus.from_dict({"ok": True, "window": [1, 2]})
