"""harness run --traces end to end: a service that reports its stages only as spans (known
durations), the reference service (spans and Server-Timing must agree), and a service that
sends no span at all."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

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


class _Collector(BaseHTTPRequestHandler):
    """The user's own OTLP/HTTP collector for --traces-forward: keeps the span count of each
    payload it receives."""

    spans: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest.FromString(body)
        self.spans.append(sum(len(ss.spans) for rs in request.resource_spans
                              for ss in rs.scope_spans))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("workers", [1, 2])
def test_stages_from_spans_equal_the_servers_truth(tmp_path: Path, workers: int) -> None:
    """With --workers 2 the receiver is the orchestrator's and each worker records its own
    requests; the spans are also forwarded to a collector of the user's (--traces-forward)."""
    port = _free_pair()
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    _Collector.spans = []
    more = ["--workers", "2", "--traces-forward",
            f"http://127.0.0.1:{collector.server_address[1]}"] if workers == 2 else []
    truth_log = tmp_path / "truth.jsonl"
    server = subprocess.Popen([sys.executable, "tests/otel_span_server.py", "--endpoint",
                               f"http://127.0.0.1:{port + 1}", "--log", str(truth_log)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        res = _harness("run", str(PLAIN), "--target", url, "--users", "4", "--duration", "6s",
                       "--warmup", "0s", "--traces", "--traces-listen", f"127.0.0.1:{port}",
                       "--no-profile", "--out", str(tmp_path / "runs"), *more)
    finally:
        server.terminate()
        server.wait(timeout=10)
        collector.shutdown()
        collector.server_close()
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
    if workers == 2:
        # each worker process wrote its own request records; every span was forwarded
        assert len(list((run / "traces").glob("requests-*.jsonl"))) == 2
        forward = status["receiver"]["forward"]
        assert (forward["failed"], forward["dropped"]) == (0, 0), forward
        assert sum(_Collector.spans) == status["receiver"]["spans"] > 0
        assert forward["forwarded"] == len(_Collector.spans)


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
