"""LatencyRecorder: exact worker merge, out-of-range counting, hlog/series.json files."""

from __future__ import annotations

import json
import random

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from harness.load.recorder import HIGHEST_US, LatencyRecorder, new_histogram

T0 = 1_764_121_132.5  # a realistic epoch: hlog readers treat offsets relative to it


def _read_hlog(path) -> list[HdrHistogram]:
    reader = HistogramLogReader(str(path), new_histogram())
    out = []
    while (h := reader.get_next_interval_histogram()) is not None:
        out.append(h)
    return out


def _counts(h: HdrHistogram) -> list[tuple[int, int]]:
    it = h.get_recorded_iterator()
    return [(x.value_iterated_to, x.count_at_value_iterated_to) for x in it]


def _values(n: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    # A wide mix: sub-ms, ms, a long tail up to minutes, so many HDR buckets are used.
    return [max(1, int(rng.choice([rng.lognormvariate(7, 1), rng.lognormvariate(11, 2)])))
            for _ in range(n)]


def test_merged_workers_equal_one_recorder_holding_all_values(tmp_path):
    values = _values(12_000)
    single = LatencyRecorder(T0, 1.0, measure_start=T0 + 1, out_dir=tmp_path / "single")
    workers = [LatencyRecorder(T0, 1.0, measure_start=T0 + 1) for _ in range(2)]
    master = LatencyRecorder(T0, 1.0, measure_start=T0 + 1, out_dir=tmp_path / "master")
    for i, v in enumerate(values):
        now = T0 + i * 0.0005  # 6 s of load
        single.tick(now)
        single.series("client", "POST predict").record(v)
        w = workers[i % 2]  # disjoint halves
        w.tick(now)
        w.series("client", "POST predict").record(v)
        if i % 3000 == 0:  # reports arrive mid-run, like Locust's every ~3 s
            for j, wk in enumerate(workers):
                master.merge_encoded(f"w{j}", wk.take_encoded())
            master.flush_merged(now)
    end = T0 + 6.3
    single.finish(end)
    for j, wk in enumerate(workers):
        wk.finish(end)
        master.merge_encoded(f"w{j}", wk.take_encoded())
    master.flush_merged(end, final=True)

    a = _read_hlog(tmp_path / "single" / "latency" / "client~POST_predict.hlog")
    b = _read_hlog(tmp_path / "master" / "latency" / "client~POST_predict.hlog")
    assert [h.get_start_time_stamp() for h in a] == [h.get_start_time_stamp() for h in b]
    assert len(a) == 6  # the partial interval [6 s, 6.3 s) has no values: no line
    for ha, hb in zip(a, b, strict=True):
        assert _counts(ha) == _counts(hb)  # exact equality at every value
    assert _counts(single.series("client", "POST predict").total) == _counts(
        master.series("client", "POST predict").total)
    assert sum(h.get_total_count() for h in b) == len(values)
    lines_a = (tmp_path / "single" / "intervals.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "master" / "intervals.jsonl").read_text().splitlines()
    pa = [(r["t"], r["p50_us"], r["p99_us"]) for r in map(json.loads, lines_a)]
    pb = [(r["t"], r["p50_us"], r["p99_us"]) for r in map(json.loads, lines_b)]
    assert pa == pb


def test_out_of_range_is_counted_per_series_not_dropped(tmp_path):
    rec = LatencyRecorder(T0, 1.0, out_dir=tmp_path)
    s = rec.series("stage", "GET x", "infer")
    assert s.record(5) is True
    assert s.record(HIGHEST_US * 2) is False
    assert s.record(-1) is False
    rec.finish(T0 + 0.5)
    index = json.loads((tmp_path / "latency" / "series.json").read_text())
    (entry,) = index["series"]
    assert entry["out_of_range"] == 2
    assert sum(h.get_total_count() for h in _read_hlog(tmp_path / "latency" / entry["file"])) == 1


def test_out_of_range_travels_from_worker_to_master(tmp_path):
    worker = LatencyRecorder(T0, 1.0)
    worker.series("client", "GET x").record(HIGHEST_US * 10)  # only an out-of-range value
    worker.finish(T0 + 0.5)
    master = LatencyRecorder(T0, 1.0, out_dir=tmp_path)
    master.merge_encoded("w", worker.take_encoded())
    master.flush_merged(T0 + 1, final=True)
    assert master.series("client", "GET x").out_of_range == 1


def test_files_follow_the_contract(tmp_path):
    rec = LatencyRecorder(T0, 0.5, measure_start=T0 + 1.0, out_dir=tmp_path, open_model=True,
                          users=lambda: 3,
                          interval_hook=lambda k, end: {"scheduled": 10 + k})
    rec.set_load_end(T0 + 2.0)
    for i in range(40):
        now = T0 + i * 0.05
        rec.tick(now)
        rec.series("client", "POST predict fraud").record(1000 + i)
        rec.series("client", "POST predict fraud", tag="input_class=null_features").record(7)
        rec.series("stage", "POST predict fraud", "fetch").record(300)
        rec.counts.requests += 1
    rec.tick(T0 + 2.4)  # past load_end: the last interval is held open for in-flight tails
    rec.series("client", "POST predict fraud").record(99)
    rec.finish(T0 + 2.5)

    index = json.loads((tmp_path / "latency" / "series.json").read_text())
    assert {k: index[k] for k in ("interval_s", "start_time", "lowest_us", "highest_us",
                                  "significant_figures")} == {
        "interval_s": 0.5, "start_time": T0, "lowest_us": 1, "highest_us": 3_600_000_000,
        "significant_figures": 3}
    by_file = {s["file"]: s for s in index["series"]}
    assert by_file["client~POST_predict_fraud.hlog"] == {
        "file": "client~POST_predict_fraud.hlog", "metric": "client",
        "name": "POST predict fraud", "stage": None, "tag": None, "out_of_range": 0}
    assert by_file["stage~POST_predict_fraud~fetch.hlog"]["stage"] == "fetch"
    assert by_file["client~POST_predict_fraud~input_class=null_features.hlog"]["tag"] == (
        "input_class=null_features")

    hists = _read_hlog(tmp_path / "latency" / "client~POST_predict_fraud.hlog")
    starts = [h.get_start_time_stamp() / 1000 for h in hists]
    assert starts == pytest.approx([T0 + 0.5 * k for k in range(4)], abs=1e-3)
    assert sum(h.get_total_count() for h in hists) == 41
    assert hists[-1].get_end_time_stamp() / 1000 == pytest.approx(T0 + 2.5, abs=1e-3)

    records = [json.loads(x) for x in (tmp_path / "intervals.jsonl").read_text().splitlines()]
    assert [r["warmup"] for r in records] == [True, True, False, False]
    assert [r["scheduled"] for r in records] == [10, 11, 12, 13]
    assert records[-1]["dt"] == pytest.approx(1.0)  # held open from T0+1.5 to the stop
    assert all(r["users"] == 3 for r in records)
    assert records[0]["requests"] == 10 and records[0]["p50_us"] == 1004  # 5th of 1000..1009
    assert rec.measured.requests == 20 and rec.measured_since == pytest.approx(T0 + 1.0)


def test_bad_arguments_name_the_rule():
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        LatencyRecorder(T0, 0)
    rec = LatencyRecorder(T0, 1.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        rec.series("latency", "x")
    with pytest.raises(ValueError, match="stage is required"):
        rec.series("stage", "x")
