"""The replay format (read, validate, merge, write), the access-log conversion, and the
replay scenario's timing, checked at the receiving end by the recording middleware."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import theilslopes
from test_recording import start_echo

from harness.rundir.replay import (
    ReplayFormatError,
    ReplayRecord,
    convert_access_log,
    convert_access_log_file,
    merge_directory,
    read_replay,
    write_replay,
)

REPO = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
N_REPLAY = 80
HEADER = '{"format": "mlserve-replay", "version": 1, "base_time": 1000.0}\n'


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(lines))
    return path


def test_round_trip_keeps_bodies_exactly_and_sorts_by_time(tmp_path):
    recs = [
        ReplayRecord(0.5, "POST", "/a", (("Content-Type", "application/json"),),
                     b'{"x": 1,  "y":"\xc3\xa9"}', 200, "custom", "vip"),
        ReplayRecord(0.1, "POST", "/b", (), b"\x00\xffbin", 422),
        ReplayRecord(0.3, "GET", "/c?q=1"),
        ReplayRecord(0.4, "POST", "/d", body_omitted=True, body_bytes=9_000_000),
    ]
    assert write_replay(tmp_path / "r.jsonl", recs, base_time=1234.5, source="unit") == 4
    back = read_replay(tmp_path / "r.jsonl")
    assert back.header.base_time == 1234.5 and back.header.source == "unit"
    assert [r.t for r in back.records] == [0.1, 0.3, 0.4, 0.5]
    assert back.records[3] == recs[0] and back.records[0] == recs[1]
    assert back.records[1] == recs[2] and back.records[2] == recs[3]
    assert back.duration_s == 0.5


def test_hand_written_json_bodies_and_a_truncated_last_line(tmp_path):
    p = _write(tmp_path / "r.jsonl", HEADER,
               '{"t": 0, "method": "post", "path": "/p", "json": {"a": [1, 2]}}\n',
               '{"t": 1, "method": "GET", "pa')  # the recorder was killed mid-line
    replay = read_replay(p)
    assert len(replay.records) == 1
    assert replay.records[0].method == "POST" and replay.records[0].body == b'{"a":[1,2]}'


@pytest.mark.parametrize("lines, message", [
    ([], "is empty"),
    (['{"t": 0, "method": "GET", "path": "/"}\n'], "the first line must be a header"),
    (['{"format": "mlserve-replay", "version": 2, "base_time": 1}\n'], "version must be 1"),
    ([HEADER, '{"t": -1, "method": "GET", "path": "/"}\n'], r"r.jsonl:2: t must be"),
    ([HEADER, '{"t": 0, "method": "FETCH", "path": "/"}\n'], "method must be one of"),
    ([HEADER, '{"t": 0, "method": "GET", "path": "x"}\n'], "path must be a string starting"),
    ([HEADER, '{"t": 0, "method": "GET", "path": "/", "when": 3}\n'], "unknown field 'when'"),
    ([HEADER, '{"t": 0, "method": "GET", "path": "/", "body": "a", "json": 1}\n'],
     "at most one of"),
    ([HEADER, 'not json\n', '{"t": 0, "method": "GET", "path": "/"}\n'], "not valid JSON"),
    ([HEADER, '{"t": 0, "method": "GET", "path": "/", "status": 99}\n'], "status must be"),
])
def test_invalid_files_name_the_line_and_the_rule(tmp_path, lines, message):
    p = _write(tmp_path / "r.jsonl", *lines)
    with pytest.raises(ReplayFormatError, match=message):
        read_replay(p)


def test_unreadable_paths(tmp_path):
    with pytest.raises(ReplayFormatError, match="cannot be read"):
        read_replay(tmp_path / "missing.jsonl")
    with pytest.raises(ReplayFormatError, match="holds no replay-"):
        read_replay(tmp_path)
    (tmp_path / "bin.jsonl").write_bytes(b'{"format": "mlserve-replay"}\n\xff\xfe\n')
    with pytest.raises(ReplayFormatError, match="not UTF-8"):
        read_replay(tmp_path / "bin.jsonl")


def test_a_recording_directory_merges_on_absolute_time(tmp_path):
    d = tmp_path / "rec"
    d.mkdir()
    write_replay(d / "replay-1.jsonl", [ReplayRecord(0.0, "GET", "/a"),
                                        ReplayRecord(2.0, "GET", "/c")], base_time=100.0)
    write_replay(d / "replay-2.jsonl", [ReplayRecord(0.5, "GET", "/b")], base_time=101.0)
    merged = read_replay(d)
    assert [(r.t, r.path) for r in merged.records] == [(0.0, "/a"), (1.5, "/b"), (2.0, "/c")]
    assert merged.header.base_time == 100.0
    assert merge_directory(d, tmp_path / "one.jsonl") == 3
    assert read_replay(tmp_path / "one.jsonl").records == merged.records


ACCESS_LOG = """\
127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "POST /v1/models/fraud/predict HTTP/1.1" 200 312 \
"-" "locust/2.47"
127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "POST /v1/models/fraud/predict HTTP/1.1" 422 90 \
"-" "curl/8 \\"x\\""
10.0.0.2 - bob [10/Oct/2026:13:55:38 +0000] "GET /healthz?full=1 HTTP/1.1" 200 15
garbage line
10.0.0.2 - - [10/Oct/2026:13:55:39 +0000] "\\x16\\x03\\x01" 400 0 "-" "-"
10.0.0.2 - - [10/Oct/2026:13:55:37 +0000] "POST /v1/models/churn/predict HTTP/1.1" 200 10 "-" "-"
"""


def test_access_log_conversion_keeps_timing_method_path_status(tmp_path):
    body = b'{"instances": [{"entity_id": 1}]}'
    replay, report = convert_access_log(ACCESS_LOG.splitlines(),
                                        bodies={"/v1/models/churn/predict": body})
    assert report.lines == 6 and report.kept == 4
    assert sum(report.skipped.values()) == 2 and report.needs_body == 2
    assert [(r.t, r.method, r.path, r.status) for r in replay.records] == [
        (0.25, "POST", "/v1/models/fraud/predict", 200),
        (0.75, "POST", "/v1/models/fraud/predict", 422),
        (1.5, "POST", "/v1/models/churn/predict", 200),
        (2.5, "GET", "/healthz?full=1", 200)]
    assert dict(replay.records[1].headers)["User-Agent"] == 'curl/8 "x"'
    assert replay.records[2].body == body
    assert dict(replay.records[2].headers)["Content-Type"] == "application/json"
    burst, _ = convert_access_log(ACCESS_LOG.splitlines(), spread="burst")
    assert [r.t for r in burst.records] == [0.0, 0.0, 1.0, 2.0]
    src = tmp_path / "access.log"
    src.write_text(ACCESS_LOG)
    rep = convert_access_log_file(src, tmp_path / "out.jsonl", path_prefix="/v1/")
    assert rep.kept == 3 and len(read_replay(tmp_path / "out.jsonl").records) == 3
    assert any("report" in line or "kept" in line for line in rep.lines_out())
    with pytest.raises(ValueError, match="spread must be one of"):
        convert_access_log([], spread="smooth")
    (tmp_path / "empty.log").write_text("nothing here\n")
    with pytest.raises(ReplayFormatError, match="no usable request line"):
        convert_access_log_file(tmp_path / "empty.log", tmp_path / "x.jsonl")


# -- the replay scenario, measured where the requests arrive ------------------------------
def _schedule(path: Path, n: int, rate: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    t, recs = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        recs.append(ReplayRecord(t, "POST", "/v1/models/fraud/predict",
                                 (("Content-Type", "application/json"), ("X-Seq", str(i))),
                                 json.dumps({"i": i}).encode(), 200))
    write_replay(path, recs, base_time=1_000_000.0, source="test schedule")
    return [r.t for r in recs]


def _run_replay(url: str, replay: Path, speed: float, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LOCUST, "-f", str(REPO / "scenarios" / "replay.py"), "--headless", "-u", "20",
         "-t", "30s", "-H", url, "--only-summary", "--replay-file", str(replay),
         "--speed", str(speed)],
        capture_output=True, text=True, timeout=60, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_replay_reproduces_inter_arrival_times_and_sends_each_request_once(tmp_path, speed):
    """Arrival offsets at the server, after removing the common start offset, against
    the file's times / speed.

    The replay sends request i at start + t_i / speed (absolute offsets: nothing adds up),
    so what remains is the machine's: gevent timers, a user's first request opening its
    connection (10-20 ms), a driver waiting for a CPU. Measured with both cores busy
    (scripts/stress-test-suite.sh, 14 runs): |error| p50 0.5-3.3 ms, p95 5.5-16.4 ms, max
    9-27 ms; the trend of the error over the schedule (Theil-Sen slope) -0.002..+0.003.
    A replay bug is systematic: the wrong speed, or gaps that add up (a trend: 0.5 at a
    wrong speed, 0.02 if every gap gained 0.5 ms), a request sent in another's slot (a
    whole gap, 25 ms at 40/s and 12.5 ms at 2x, for most requests), a request lost or sent
    twice. Tolerances: slope < 0.01, median error and median gap error < 10 ms, and no
    request 100 ms off its slot (four mean gaps; the machine's stalls were <= 27 ms).
    The tail is not bounded tighter: it is the machine's, not the replay's."""
    times = _schedule(tmp_path / "sched.jsonl", N_REPLAY, 40.0, seed=int(speed))
    server = start_echo(tmp_path)
    try:
        proc = _run_replay(server.url, tmp_path / "sched.jsonl", speed, tmp_path)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"replay: sent {N_REPLAY} of {N_REPLAY} requests" in proc.stderr
    got = read_replay(server.record_dir).records
    seqs = [int(dict(r.headers)["X-Seq"]) for r in got]
    assert sorted(seqs) == list(range(N_REPLAY))  # every request, exactly once
    arrived = np.array([r.t for r in sorted(got, key=lambda r: int(dict(r.headers)["X-Seq"]))])
    want = np.array(times) / speed
    err = (arrived - arrived[0]) - (want - want[0])
    err -= np.median(err)
    print("replay arrival error ms: p50 {:.2f} p95 {:.2f} max {:.2f}".format(*tuple(
        1000 * np.percentile(np.abs(err), [50, 95, 100]))))
    slope = theilslopes(err, want)[0]
    assert abs(slope) < 0.01, (slope, err)
    assert np.median(np.abs(err)) < 0.010, err
    assert np.abs(err).max() < 0.100, err
    gap_err = np.abs(np.diff(arrived) - np.diff(want))
    assert np.median(gap_err) < 0.010, gap_err
