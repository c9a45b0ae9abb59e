"""Accuracy against a known truth (the cheap version of benchmarks/accuracy.py).

`harness run --target` (open model, constant arrivals, no profiler) against
tests/known_latency_server.py, whose CSV log is the truth:
- stage names the harness has never seen come back with exactly the server's values:
  each percentile within HdrHistogram's precision (3 significant figures: 0.1 %);
- the client time is never below the server's own time at the same rank;
- with the whole server frozen for 1 s, the corrected p99/p99.9 match the analytic
  coordinated-omission answer within 5 % (the derivation is in benchmarks/accuracy.py),
  while the uncorrected p90 (a pool of 10 users that all wait during the stall) misses it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness import stats
from harness.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
HDR_REL = 0.001  # 3 significant figures


def _load_accuracy():
    spec = importlib.util.spec_from_file_location("accuracy",
                                                  ROOT / "benchmarks" / "accuracy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


acc = _load_accuracy()


def test_hdr_rank_rounds_like_hdrhistogram():
    assert acc.hdr_rank(99.9, 1000) == 999  # ceil() of the float product would say 1000
    assert acc.hdr_rank(50, 1) == 1 and acc.hdr_rank(0.01, 10) == 1
    assert acc.rank_percentile([5, 1, 4, 2, 3], 50) == 3
    with pytest.raises(ValueError, match="must not be empty"):
        acc.rank_percentile([], 50)


def test_locust_percentile_is_locusts_algorithm():
    # Locust: the highest response time with at most (1 - p) of the requests above it
    times = {"10": 90, "20": 9, "300": 1}
    assert acc.locust_percentile(times, 100, 50) == 10.0
    assert acc.locust_percentile(times, 100, 95) == 20.0
    assert acc.locust_percentile(times, 100, 99.9) == 300.0


def _schedule_kept(run: RunDir, scheduled: int, counted: int) -> None:
    """The open model's account of its schedule (constant arrivals: exactly rate x
    duration intended starts in the window): every one started or counted as dropped, and
    every started one counted. Drops are allowed, counted: a driver that falls 0.1 s
    behind at the end of the window (a busy machine) leaves 5 starts at 50/s unsent."""
    m = run.load()["measured"]
    assert m["scheduled"] == scheduled, m
    assert m["started"] + m["dropped"] == scheduled and m["dropped"] <= 5, m
    assert counted == m["started"] == m["requests"], m


@pytest.mark.slow
def test_stage_percentiles_equal_the_servers_record(tmp_path: Path) -> None:
    rows = acc.steady(tmp_path, rate=50.0, duration=4.0)
    # every request the server logged is in every series, and none else
    _schedule_kept(RunDir(next((tmp_path / "runs").iterdir())), 200, rows[0]["n_truth"])
    for row in rows:
        assert row["n_harness"] == row["n_truth"] == rows[0]["n_truth"], row
        if row["series"].startswith("stage"):
            assert row["truth_us"] <= row["harness_us"] <= row["truth_us"] * (1 + HDR_REL) + 1, \
                row
        else:  # the client adds its HTTP stacks to the server's time, never subtracts
            assert row["harness_us"] >= row["truth_us"] * (1 - HDR_REL), row


@pytest.mark.slow
def test_corrected_tail_matches_the_analytic_stall(tmp_path: Path) -> None:
    rate, stall_s = 50.0, 1.0
    rows = {r["p"]: r for r in acc.stall(tmp_path, rate=rate, duration=5.0, stall_at=2.0,
                                         stall_s=stall_s, with_locust=False)}
    run = RunDir(next((tmp_path / "stall-runs").iterdir()))
    assert rows[99.0]["n"] == rows[99.0]["truth_n"]
    _schedule_kept(run, 250, rows[99.0]["n"])
    for p in (99.0, 99.9):  # ranks inside the stall: s + (r - N + M) / R
        assert rows[p]["in_stall"] and abs(rows[p]["rel_error"]) <= 0.05, rows[p]
    # p90 is inside the stall too (rank 225 > N - M = 200), but the 10 users all waited
    # during it, sent late: uncorrected, those requests look fast
    assert rows[90.0]["in_stall"]
    assert rows[90.0]["uncorrected_us"] < 0.25 * rows[90.0]["analytic_us"], rows[90.0]
    # The first start that finds every user of the pool waiting is intended pool / rate after
    # the stall began, so the largest lateness is S - pool / R (0.8 s here), less timer jitter.
    most_late = (stall_s - acc.STALL_USERS / rate) * 1e6
    assert stats.percentiles(run.histogram("lateness"), [100.0])[100.0] >= most_late - 50_000
