"""The load generator's own time per request (harness/load/calibrate.py): measured against a
local echo at the run's start, it splits the residual; checked against a server that logs
its own handling time."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

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
def test_the_residual_split_against_a_server_of_known_handling_time(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    server = subprocess.Popen([sys.executable, "tests/known_latency_server.py", "--port", "0",
                               "--print-port", "--latency-ms", "5", "--log", str(truth)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
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
    assert overhead["by_client"]["FastHttpSession"]["requests"] == 200
    # FastHttpSession on loopback: tens to hundreds of µs (1 ms would mean a broken echo or
    # a starved machine; the bound is generous for a busy 2-core box)
    assert 10 <= overhead["p50_us"] <= 2000, overhead
    split = json.loads((run / "summary.json").read_text())["stages"]["*"]["residual_split"]
    residual = json.loads((run / "summary.json").read_text())["stages"]["*"]["residual"]
    assert split["loadgen_us"] + split["rest_us"] == pytest.approx(residual["mean_us"], abs=0.01)
    assert split["loadgen_us"] == pytest.approx(min(overhead["mean_us"], residual["mean_us"]),
                                                abs=0.01)
    # independently: everything outside the server's own measured window is at least the
    # client path's own time (the server logs parsed request -> the response's flush)
    service = statistics.median(int(r["service_us"]) for r in csv.DictReader(truth.open()))
    client = json.loads((run / "summary.json").read_text())["requests"][-1]["latency"]
    outside = client["client_uncorrected"]["p50_us"] - service
    assert outside >= 0.5 * overhead["p50_us"], (outside, overhead)
    text = subprocess.run([sys.executable, "-m", "harness.cli", "summary", str(run)],
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert "load generator's own" in text and "calibrated against a local echo" in text
