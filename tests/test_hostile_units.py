"""The bounds on what a target controls, unit by unit (issue 20): Server-Timing parsing,
the series cap of the recorder (local and merged from workers), the bounded GET of
/metrics against the misbehaving server, and the self-check that names a target that
passed a bound. The end-to-end runs are in tests/test_hostile_runs.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_support import ROOT, start_target, stop
from test_rules_engine import _context

from harness.analysis import selfcheck
from harness.load.recorder import LatencyRecorder, RefusedSeries
from harness.load.servertiming import (
    MAX_ENTRIES,
    ServerTimingError,
    parse_server_timing,
)
from harness.run.collectors.httpget import GetError, bounded_get
from harness.run.collectors.prometheus import scrape
from harness.rundir.records import LoadReport

T0 = 1_764_121_132.5


# -- Server-Timing -------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "rule"), [
    ("x;dur=1e308, app;dur=0.040", "<= 1e+09 ms"),  # overflowed int(ms * 1000) before
    ("x;dur=" + "9" * 400, "<= 1e+09 ms"),  # the fast path: digits that are inf as a float
    ("x;dur=inf", "finite"),
    (", ".join(f"e{i};dur=0.001" for i in range(MAX_ENTRIES + 1)), "at most 32 entries"),
    (", ".join(f"e{i};dur=0.001" for i in range(5000)), "at most 8192 characters"),
    ("n" * 65 + ";dur=1", "at most 64 characters"),
    ("n" * 65 + ';desc="x";dur=1', "at most 64 characters"),
])
def test_server_timing_over_a_bound_is_malformed(header: str, rule: str) -> None:
    with pytest.raises(ServerTimingError, match=rule.replace("+", r"\+")):
        parse_server_timing(header)


def test_server_timing_within_the_bounds_parses_as_before() -> None:
    header = ", ".join(f"e{i};dur={i}.5" for i in range(MAX_ENTRIES))
    assert parse_server_timing(header) == {f"e{i}": i + 0.5 for i in range(MAX_ENTRIES)}
    assert parse_server_timing("n" * 64 + ";dur=1e9") == {"n" * 64: 1e9}


# -- the series cap ------------------------------------------------------------------------

def test_series_past_the_cap_are_refused_and_their_values_counted(tmp_path: Path) -> None:
    rec = LatencyRecorder(T0, 1.0, out_dir=tmp_path, max_series=3)
    for i in range(10):
        rec.series("stage", "A", f"s{i}").record(1000)
    assert isinstance(rec.series("stage", "A", "s9"), RefusedSeries)
    rec.series("stage", "A", "s0").record(1000)  # a kept series still records
    rec.finish(T0 + 0.5)
    assert rec.bounds() == {"series_limit": 3, "series": 3, "values_over_series_limit": 7}
    index = json.loads((tmp_path / "latency" / "series.json").read_text())
    assert [s["stage"] for s in index["series"]] == ["s0", "s1", "s2"]
    assert len(list((tmp_path / "latency").glob("*.hlog"))) == 3


def test_the_master_caps_the_union_of_its_workers_series(tmp_path: Path) -> None:
    workers = [LatencyRecorder(T0, 1.0, max_series=3) for _ in range(2)]
    for j, w in enumerate(workers):  # 3 each, 5 distinct names in all
        for name in ("shared", f"w{j}a", f"w{j}b"):
            w.series("stage", "A", name).record(1000)
        w.series("stage", "A", "refused-by-the-worker").record(5)
        w.finish(T0 + 0.5)
    master = LatencyRecorder(T0, 1.0, out_dir=tmp_path, max_series=3)
    for j, w in enumerate(workers):
        master.merge_encoded(f"w{j}", w.take_encoded())
    master.flush_merged(T0 + 1.0, final=True)
    # the master kept 3 series; 2 values of the 5th and 6th names were cut there, and
    # each worker cut one value itself
    assert master.bounds() == {"series_limit": 3, "series": 3, "values_over_series_limit": 4}


def test_a_target_sending_new_names_forever_grows_nothing_past_the_cap() -> None:
    rec = LatencyRecorder(T0, 1.0, max_series=50)
    tracemalloc.start()
    for i in range(50):
        rec.series("stage", "A", f"s{i}").record(1)
    _, at_cap = tracemalloc.get_traced_memory()
    for i in range(50, 20_050):
        rec.series("stage", "A", f"s{i}").record(1)
    now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rec.counts.over_series_limit == 20_000
    # 20,000 more names (each a 370 KiB series without the cap: 7 GB) cost almost nothing
    assert now - at_cap < 1 << 20, (now, at_cap)


# -- the open model's schedule ----------------------------------------------------------------

def test_a_schedule_the_users_cannot_keep_up_with_holds_no_backlog() -> None:
    """The intervals count 2,000 arrivals a second while no user claims any (a target far
    too slow for the rate): before, every counted-but-unclaimed time waited in a queue."""
    from harness.load.schedule import ArrivalSchedule

    s = ArrivalSchedule(2_000, "poisson", seed=1, start=0.0)
    for k in range(5):
        s.take_scheduled(k, k + 1.0)
    tracemalloc.start()
    for k in range(5, 45):  # 80,000 more arrivals: 2.5 MB as a queue of floats before
        s.take_scheduled(k, k + 1.0)
    grown, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert grown < 256 << 10, grown
    first = s.claim()  # the users, when they come, still get every time from the start
    assert 0 < first < 0.01 and s.claim() > first


# -- /metrics: bytes, time, a cut body -------------------------------------------------------

@pytest.fixture(params=["huge", "trickle", "cut"])
def metrics_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    proc, url, _ = start_target(tmp_path, "--pattern", "ok", "--metrics", request.param)
    yield request.param, url
    stop(proc)


def test_a_metrics_scrape_is_bounded_in_bytes_time_and_completeness(
        metrics_target: tuple[str, str]) -> None:
    mode, url = metrics_target
    tracemalloc.start()
    began = time.monotonic()
    with pytest.raises(GetError) as err:
        bounded_get(url + "/metrics", deadline_s=1.0, max_bytes=16 << 20)
    took = time.monotonic() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 1 s of patience; 9 s more for a machine busy with other work
    assert took < 10, took
    assert peak < 40 << 20, peak  # 64 MiB offered, at most 16 MiB (+ a chunk) kept
    expected = {"huge": ("bytes", "larger than 16777216 bytes"),
                "trickle": ("deadline", "did not answer within 1 s"),
                "cut": (None, "cut after 1024 of 1048576 bytes")}[mode]
    assert (err.value.bound, expected[1] in str(err.value)) == (expected[0], True), str(err.value)
    with pytest.raises(ValueError) as scraped:  # the collector's own message, no traceback
        scrape(url + "/metrics", timeout_s=1.0)
    assert ("exceeded a bound" in str(scraped.value)) == (expected[0] is not None)


def test_a_socket_timeout_before_the_timer_runs_is_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The race CI lost on a busy machine: the socket's own timeout (deadline_s per
    operation) fired before the timer thread ran, and the scrape said "TimeoutError: timed
    out" instead of naming the deadline. Staged deterministically: the timer never fires."""
    import socket
    import threading

    class Idle(threading.Timer):
        def start(self) -> None:  # the timer thread that never got a core
            pass

    monkeypatch.setattr(threading, "Timer", Idle)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
        with pytest.raises(GetError) as err:
            bounded_get(url, deadline_s=0.2, max_bytes=100)
    assert err.value.bound == "deadline", str(err.value)
    assert "did not answer within 0.2 s" in str(err.value)


def test_a_scrape_of_a_well_behaved_target_is_unchanged(tmp_path: Path) -> None:
    proc, url, _ = start_target(tmp_path, "--pattern", "ok")
    try:
        assert scrape(url + "/metrics").startswith("# HELP up")
        status, body = bounded_get(url + "/healthz", deadline_s=5.0, max_bytes=100)
        assert (status, body) == (200, b"{}")
    finally:
        stop(proc)


# -- the self-check names the target ---------------------------------------------------------

def test_target_bounds_names_the_target_and_what_it_passed() -> None:
    c = _context()
    assert selfcheck.sources.target_bounds(c) is None  # a run from before the bounds were kept
    within = dataclasses.replace(c, target="http://t:1", load=LoadReport(bounds={
        "series_limit": 500, "series": 12, "values_over_series_limit": 0}))
    entry = selfcheck.sources.target_bounds(within)
    assert entry is not None and entry.ok and "12 of 500 series" in entry.detail
    passed = dataclasses.replace(within, load=LoadReport(bounds={
        "series_limit": 500, "series": 500, "values_over_series_limit": 42}),
        collector_errors=("prometheus: end: the target exceeded a bound: x", "other: y"))
    entry = selfcheck.sources.target_bounds(passed)
    assert entry is not None and not entry.ok and entry.severity == "warning"
    assert entry.detail == ("the target http://t:1 exceeded a bound: 42 values of series "
                            "beyond 500 series per run (names the target sent) were counted, "
                            "not recorded; prometheus: end: the target exceeded a bound: x")


# -- error names -------------------------------------------------------------------------------

_NAMES = r"""
import json
from geventhttpclient.useragent import RetriesExceeded
from harness.load.hooks import error_type
from harness.load.requestbounds import ResponseHeadersTooLarge

def raised_in_except(inner, outer):
    try:
        try:
            raise inner
        except BaseException:
            raise outer
    except BaseException as exc:
        return exc

print(json.dumps([
    error_type(RetriesExceeded("http://t/x", 0, original=TimeoutError("timed out"))),
    error_type(raised_in_except(TimeoutError("timed out"), RetriesExceeded("http://t/x", 0))),
    error_type(RetriesExceeded("http://t/x", "Redirection limit reached (30)")),
    error_type(ResponseHeadersTooLarge("x")),
    error_type(RetriesExceeded("http://t/x", 0, original=ConnectionRefusedError(111, "no"))),
]))
"""


def test_failures_are_named_by_their_root_cause() -> None:
    # In a subprocess: importing Locust monkey-patches this test process's standard library.
    res = subprocess.run([sys.executable, "-c", _NAMES], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == ["TimeoutError", "TimeoutError", "TooManyRedirects",
                                      "ResponseHeadersTooLarge", "ConnectionRefusedError"]


# -- bad input on the command line: one line naming the rule and the value, exit 2 -------------

SIMPLE = ROOT / "tests" / "locustfiles" / "fraud_simple.py"
_LONG = "n" * 300


@pytest.mark.parametrize(("args", "message"), [
    (["--users", "100000000"],
     "users must be <= 20000 (20000 per load-generating process, 1 process; got 100000000)"),
    (["--users", "50000", "--workers", "2"],
     "users must be <= 40000 (20000 per load-generating process, 2 processes; got 50000)"),
    (["--rate", "1e12", "--duration", "2s"], "rate must be <= 100000 requests/s (got 1e+12)"),
    (["--duration", "99999999999h"], "duration must be <= 604800 s (7 days; got 3.6e+14 s)"),
    (["--duration", "9" * 400], "duration must be a finite number of seconds (got '999"),
    (["--warmup", "200h"], "warmup must be <= 604800 s (7 days; got 720000 s)"),
    (["--spawn-rate", "inf"], "spawn rate must be a finite number of users/s (got inf)"),
    (["--start-timeout", "0.5s"], "start timeout must be between 1 and 3600 s (got 0.5)"),
    (["--target", "http://127.0.0.1:99999"],
     "target must be an http:// or https:// URL with a host and a port in 1-65535 (got "
     "'http://127.0.0.1:99999': Port out of range 0-65535)"),
    (["--target", "http://[::1"], "(got 'http://[::1': Invalid IPv6 URL)"),
    (["--target", "ftp://127.0.0.1:21"], "(got 'ftp://127.0.0.1:21')"),
])
def test_bad_run_values_are_one_line_naming_the_rule_and_the_value(
        args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    if "--target" not in args:
        args = [*args, "--target", "http://127.0.0.1:9"]
    began = time.monotonic()
    code = main(["run", str(SIMPLE), *args, "--out", str(tmp_path / "runs"), "--no-profile"])
    err = capsys.readouterr().err
    assert time.monotonic() - began < 10  # checked before anything starts
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs").exists()  # nothing was created


def _out_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "a-file").write_text("x")
    return {"under /proc": (Path("/proc/harness-runs"), "No such file or directory"),
            "an existing file": (tmp / "a-file", "File exists"),
            "a name too long": (tmp / _LONG, "File name too long")}


@pytest.mark.parametrize("case", ["under /proc", "an existing file", "a name too long"])
def test_an_out_that_cannot_be_created_is_one_line_and_exit_2(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    out, reason = _out_cases(tmp_path)[case]
    code = main(["run", str(SIMPLE), "--target", "http://127.0.0.1:9", "--out", str(out),
                 "--no-profile"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"harness run: could not run: --out must be a directory the harness can create and "
        f"write in (got {str(out)!r}: {reason})"], err


def test_a_read_only_out_is_one_line_and_exit_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    # root writes through file modes, so a read-only file system (a tmpfs mounted ro)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        code = main(["run", str(SIMPLE), "--target", "http://127.0.0.1:9", "--out",
                     str(ro / "runs"), "--no-profile"])
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    err = capsys.readouterr().err
    assert code == 2 and "Read-only file system" in err and len(err.splitlines()) == 1, err


# -- the self-check and the SLO file -----------------------------------------------------------

def test_a_run_without_one_successful_request_fails_measured_data() -> None:
    from harness.rundir.records import Latencies, LatencyBlock

    c = _context()
    failed = Latencies(LatencyBlock(count=0), None)
    rows = tuple(dataclasses.replace(r, failures=r.count, latency=failed)
                 for r in c.summary.requests)
    entry = selfcheck.core.measured_data(
        dataclasses.replace(c, summary=dataclasses.replace(c.summary, requests=rows)))
    # a warning: the failures are measured (the service failed, not the measurement)
    assert (entry.ok, entry.severity) == (False, "warning")
    assert entry.detail == ("12 requests in a measured window of 5.0 s; none succeeded: no "
                            "latency was measured (the errors are counted: every request "
                            "failed)")
    assert selfcheck.core.measured_data(c).ok  # 12 requests, 12 with a latency


@pytest.mark.parametrize(("key", "value"), [("p50", 50.0), ("p999", 99.9), ("p99.9", 99.9),
                                            ("p9999", 99.99), ("p995", 99.5)])
def test_percentile_keys_read_as_summary_json_writes_them(key: str, value: float) -> None:
    from harness.analysis.slo import parse_percentile

    assert parse_percentile(key) == value


@pytest.mark.parametrize("key", ["p150", "p990", "p050", "p100", "p1000"])
def test_a_percentile_key_beyond_100_is_refused_not_read_as_another(key: str) -> None:
    from harness.analysis.slo import SloError, parse_slo

    with pytest.raises(SloError, match=rf"latency\.{key}: percentile must be in \(0, 100\)"):
        parse_slo({"objectives": [{"latency": {key: "50ms"}}]})


# -- the deadlines on the load driver ----------------------------------------------------------

class _Driver:
    """What DriverWatch asks of a driver, recorded."""

    def __init__(self) -> None:
        self.config = {"stop_grace_s": 0.0}
        self.sent: list[int] = []
        self.killed = 0

    def send(self, signum: int) -> None:
        self.sent.append(signum)

    def kill(self) -> None:
        self.killed += 1


def _watch(monkeypatch: pytest.MonkeyPatch, **options: object) -> tuple[Any, _Driver]:
    from harness.run import driverproc
    from harness.run.options import RunOptions

    monkeypatch.setattr(driverproc, "STOP_SLACK_S", 0.2)
    monkeypatch.setattr(driverproc, "END_SLACK_S", 0.2)
    driver = _Driver()
    opts = RunOptions(scenario=SIMPLE, target="http://127.0.0.1:9", collectors={
        "profile": None}, **options)  # type: ignore[arg-type]
    return driverproc.DriverWatch(driver, opts), driver  # type: ignore[arg-type]


def test_a_stop_signal_is_forwarded_then_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal as sig

    watch, driver = _watch(monkeypatch, duration_s=60.0)
    watch.started()
    watch.check([sig.SIGHUP])
    assert driver.sent == [sig.SIGTERM] and driver.killed == 0  # first: stop gracefully
    time.sleep(0.3)  # the grace (0 s) and the slack (0.2 s) passed: no more patience
    watch.check([sig.SIGHUP])
    assert driver.killed == 1 and "did not exit within" in watch.notes[0]
    watch.check([sig.SIGHUP, sig.SIGINT])  # a second signal kills at once
    assert driver.killed == 2


def test_a_load_that_does_not_start_in_time_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal as sig

    from harness.run.options import RunError

    watch, driver = _watch(monkeypatch, start_timeout_s=1.0)
    watch.check([])
    assert driver.sent == [] and driver.killed == 0
    time.sleep(1.05)
    with pytest.raises(RunError, match=r"did not start within 1 s \(--start-timeout\)"):
        watch.check([])
    assert driver.sent == [sig.SIGUSR2, sig.SIGUSR1] and driver.killed == 1  # stacks first


def test_a_driver_past_its_end_is_told_to_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal as sig

    watch, driver = _watch(monkeypatch, duration_s=0.1, warmup_s=0.0)
    watch.started()
    time.sleep(0.4)  # 0.1 s of load, 0 s of grace, 0.2 s of slack
    watch.check([])
    assert driver.sent == [sig.SIGTERM] and watch.overran
    assert "had not finished" in watch.notes[0]


# -- child processes ---------------------------------------------------------------------------

def test_a_childs_group_is_stopped_after_the_child_itself_was_killed() -> None:
    """A driver killed by the OOM killer leaves its workers with parent 1, out of any tree
    the harness could walk: its process group still holds them."""
    import psutil

    from harness.run import children

    proc = children.spawn([sys.executable, "-c", "import subprocess, sys, time; "
                           "subprocess.Popen([sys.executable, '-c', 'import time; "
                           "time.sleep(60)']); print('up', flush=True); time.sleep(60)"],
                          stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    worker = psutil.Process(proc.pid).children()[0]
    proc.kill()  # the leader dies; its child is re-parented and stays in the group
    proc.wait()
    assert worker.is_running() and os.getpgid(worker.pid) == proc.pid
    began = time.monotonic()
    children.stop_group(proc, timeout_s=5.0)
    assert time.monotonic() - began < 10
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert children.stop_all() == []  # stopped once, forgotten


def test_a_reused_pid_is_never_taken_for_a_child() -> None:
    from harness.run import children

    # this very process stands in for "another process that got the child's pid"
    assert children._members(os.getpid(), created=1.0) == []
