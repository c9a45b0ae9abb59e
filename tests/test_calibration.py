"""The load generator's own time per request (harness/load/calibrate.py): measured against a
local echo at the run's start, it splits the residual; checked against a server that logs
its own handling time."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from known_latency_server import read_log, start_subprocess

ROOT = Path(__file__).resolve().parent.parent


def test_the_echo_answers_with_its_own_time() -> None:
    import urllib.request

    echo = subprocess.Popen([sys.executable, "-m", "harness.load.echo"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert echo.stdout is not None
        port = echo.stdout.readline().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/x", data=b'{"a": 1}',
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.read() == b'{"ok":true}'
            entry = resp.headers["Server-Timing"]
        assert entry.startswith("echo;dur=") and float(entry.split("=")[1]) < 5.0
    finally:
        echo.kill()
        echo.wait()


@pytest.mark.slow
@pytest.mark.parametrize("close", [False, True], ids=["kept-alive", "connection-close"])
def test_the_residual_split_against_a_server_of_known_handling_time(tmp_path: Path,
                                                                    close: bool) -> None:
    truth = tmp_path / "truth.csv"
    server, port = start_subprocess(["--latency-ms", "5", "--log", str(truth),
                                     *(["--close"] if close else [])])
    try:
        url = f"http://127.0.0.1:{port}"
        res = subprocess.run([sys.executable, "-m", "harness.cli", "run",
                              "benchmarks/locustfiles/known_get.py", "--target", url, "--rate",
                              "50", "--duration", "5s", "--no-profile", "--out", str(tmp_path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert res.returncode in (0, 3), res.stderr
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    overhead = json.loads((run / "load.json").read_text())["client_overhead"]
    calibrated = overhead["by_client"]["FastHttpSession"]
    assert calibrated["requests"] == calibrated["new_connection"]["requests"] == 200
    # FastHttpSession on loopback: tens to hundreds of µs (1 ms would mean a broken echo or
    # a starved machine; the bound is generous for a busy 2-core box)
    assert 10 <= overhead["p50_us"] <= 2000, overhead
    # the run counted which connections the requests had: every response closed its
    # connection, or none did
    conns = overhead["connections"]
    assert conns["responses"] > 200 and conns["closed"] == (conns["responses"] if close else 0)
    own = overhead["new_connection"]["mean_us"] if close else overhead["mean_us"]
    summary = json.loads((run / "summary.json").read_text())
    split, residual = summary["stages"]["*"]["residual_split"], summary["stages"]["*"]["residual"]
    assert split["loadgen_us"] + split["rest_us"] == pytest.approx(residual["mean_us"], abs=0.01)
    assert split["loadgen_us"] == pytest.approx(min(own, residual["mean_us"]), abs=0.01)
    assert split["closed_share"] == (1.0 if close else 0.0)
    # independently: everything outside the server's own measured window is at least the
    # client path's own time (the server logs parsed request -> the response's flush)
    service = statistics.median(int(r["service_us"]) for r in read_log(truth))
    client = summary["requests"][-1]["latency"]
    outside = client["client_uncorrected"]["p50_us"] - service
    cost = overhead["new_connection"]["p50_us"] if close else overhead["p50_us"]
    assert outside >= 0.5 * cost, (outside, overhead)
    text = subprocess.run([sys.executable, "-m", "harness.cli", "summary", str(run)],
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert "load generator's own" in text and "calibrated against a local echo" in text
    assert f"{100 if close else 0} % of responses closed their connection" in text
    # the report shows the split too
    subprocess.run([sys.executable, "-m", "harness.cli", "report", str(run)], check=True,
                   capture_output=True, cwd=ROOT, timeout=120)
    html = (run / "report.html").read_text()
    assert "residual: load generator&#x27;s own" in html
    assert f"{100 if close else 0} % of the responses closed their connection" in html


def test_each_request_is_charged_its_kind_of_connection() -> None:
    from harness.analysis.summary.build import _own_time

    base = {"mean_us": 100.0, "new_connection": {"mean_us": 300.0}}
    assert _own_time({**base, "connections": {"responses": 4, "closed": 1}}) == (150.0, 0.25)
    assert _own_time({**base, "connections": {"responses": 4, "closed": 0}}) == (100.0, 0.0)
    # a run from before the two kinds were measured, or one with no response: kept-alive
    assert _own_time({"mean_us": 100.0}) == (100.0, None)
    assert _own_time({**base, "connections": {"responses": 0, "closed": 0}}) == (100.0, None)
    assert _own_time({"p50_us": 90.0}) == (None, None)
