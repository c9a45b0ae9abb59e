"""harness run --traces end to end: a service that reports its stages only as spans (known
durations), the reference service (spans and Server-Timing must agree), and a service that
sends no span at all."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import stats
from harness.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ROOT / "tests" / "locustfiles" / "plain_post.py"
pytestmark = pytest.mark.slow


def _free_pair() -> int:
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return int(port)
    raise AssertionError("no adjacent free ports")


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def _run_dir(res: subprocess.CompletedProcess[str]) -> Path:
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.split(": ", 1)[1].split("  (")[0])


def test_stages_from_spans_equal_the_servers_truth(tmp_path: Path) -> None:
    port = _free_pair()
    truth_log = tmp_path / "truth.jsonl"
    server = subprocess.Popen([sys.executable, "tests/otel_span_server.py", "--endpoint",
                               f"http://127.0.0.1:{port + 1}", "--log", str(truth_log)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        res = _harness("run", str(PLAIN), "--target", url, "--users", "4", "--duration", "6s",
                       "--warmup", "0s", "--traces", "--traces-listen", f"127.0.0.1:{port}",
                       "--no-profile", "--out", str(tmp_path / "runs"))
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert res.returncode in (0, 3), res.stderr
    assert "traces: OTLP receiver on" in res.stdout + res.stderr
    run = _run_dir(res)
    status = json.loads((run / "traces" / "status.json").read_text())
    truth = {d["trace_id"]: d for d in map(json.loads, truth_log.read_text().splitlines())}
    records = status["request_records"]
    # every request the driver recorded reached the server, and >= 99 % joined a server span
    assert records > 100 and status["join"]["joined"] >= 0.99 * records, status["join"]
    assert status["join"]["negative_residuals"] == 0  # the span ends before the response
    rd = RunDir(run)
    entries = {(s["metric"], s["stage"]): s for s in rd.series() if s.get("source") == "traces"}
    assert entries[("stage", "server")]["total"] is True
    # the trace-derived histograms hold exactly the truth's values (same µs rounding), so
    # their percentiles agree within HDR's precision (0.1 % + 1 µs)
    joined_ids = [json.loads(ln)["trace_id"] for p in (run / "traces").glob("requests-*.jsonl")
                  for ln in p.read_text().splitlines()]
    for stage, key in (("fetch", "fetch_us"), ("infer", "infer_us"), ("server", "server_us")):
        values = sorted(truth[t][key] for t in joined_ids if t in truth)
        hist = rd.histogram("stage", "POST predict", stage=stage, measured_only=False)
        assert hist.get_total_count() == len(values)
        for p in (50, 90, 99):
            # HdrHistogram's rank: round(p/100 * n), at least 1 (harness.stats.percentiles)
            want = values[max(1, int(p * len(values) / 100 + 0.5)) - 1]
            got = stats.percentiles(hist, [p])[p]
            assert abs(got - want) <= want * 0.001 + 1, (stage, p, got, want)
    residual = rd.histogram("residual", "POST predict", measured_only=False)
    assert residual.get_total_count() == len([t for t in joined_ids if t in truth])


def test_reference_service_spans_agree_with_its_server_timing(tmp_path: Path) -> None:
    res = _harness("run", "scenarios/production.py", "--serve", "reference", "--users", "2",
                   "--duration", "5s", "--warmup", "1s", "--traces", "--no-profile",
                   "--out", str(tmp_path / "runs"))
    assert res.returncode in (0, 3), res.stderr
    status = json.loads((_run_dir(res) / "traces" / "status.json").read_text())
    assert status["ok"] and status["join"]["joined"] == status["request_records"] > 20
    # the service builds its spans from the marks its Server-Timing uses: <= 2 µs apart
    agreement = status["agreement"]
    assert set(agreement) == {"fetch", "infer", "serialize", "service"}
    assert all(a["max_abs_diff_us"] <= 2 for a in agreement.values()), agreement
    # Server-Timing is kept as the stage source; traces did not add a second copy
    assert status["series"]["series"] == 0 and len(status["series"]["skipped_names"]) == 3


def test_a_service_that_exports_nothing_is_named(tmp_path: Path) -> None:
    server = subprocess.Popen([sys.executable, "tests/known_latency_server.py", "--port", "0",
                               "--print-port", "--latency-ms", "2", "--server-timing", "omit"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        res = _harness("run", str(PLAIN), "--target", url, "--users", "2", "--duration", "2s",
                       "--traces", "--traces-grace", "1s", "--no-profile",
                       "--out", str(tmp_path / "runs"))
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert res.returncode in (0, 3), res.stderr
    meta = json.loads((_run_dir(res) / "run.json").read_text())
    status = meta["collectors"]["traces"]
    assert status["ok"] is False and "no span arrived" in status["reason"]
    assert status["grace_waited_s"] <= 3.0  # bounded by --traces-grace (1 s) and the poll
