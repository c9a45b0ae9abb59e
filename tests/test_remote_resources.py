"""A target on another host: its CPU and memory from its own /metrics process_*, its host's
from node_exporter (harness/run/collectors/processmetrics.py, nodemetrics.py;
harness/rundir/telemetry.py), and where the summary, report, self-check and diagnosis use
them.

The fast tests read real expositions (this process's own prometheus_client registry, served
by a real HTTP server on 127.0.0.1) and hand-computed counter rows. The slow ones run
`harness run --target URL --target-remote` against the FastAPI example (one uvicorn
process, prometheus_client's default registry: it exports process_*) and the reference
service (gunicorn, multiprocess registry: no process_*), with a real node_exporter
(Debian prometheus-node-exporter, `make system-deps`) on a free port of 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import free_port
from prometheus_client import REGISTRY, generate_latest

from harness.run.collectors.metricsloop import ScrapeLoop
from harness.run.collectors.nodemetrics import NodeMetricsOptions
from harness.run.collectors.processmetrics import ProcessMetricsOptions, describe_processes
from harness.rundir.telemetry import (
    NODE_COLUMNS,
    PROCESS_COLUMNS,
    NodeSample,
    ProcessSample,
    node_intervals,
    node_row,
    parse_process_csv,
    process_intervals,
    process_row,
)

ROOT = Path(__file__).resolve().parent.parent
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")

# A node_exporter exposition cut to the lines the collector reads, as node_exporter 1.5
# writes them (2 CPUs), plus a line of another metric that starts with the same prefix.
NODE_TEXT = """# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 100
node_cpu_seconds_total{cpu="0",mode="iowait"} 2
node_cpu_seconds_total{cpu="0",mode="steal"} 1
node_cpu_seconds_total{cpu="0",mode="user"} 7
node_cpu_seconds_total{cpu="1",mode="idle"} 90
node_cpu_seconds_total{cpu="1",mode="iowait"} 0
node_cpu_seconds_total{cpu="1",mode="steal"} 0
node_cpu_seconds_total{cpu="1",mode="user"} 10
node_cpu_seconds_total_extra 5
node_load1 0.75
node_memory_MemAvailable_bytes 1.5e+09
node_memory_MemTotal_bytes 4e+09
"""


# -- the format: rows from expositions, rates from rows -----------------------------------

def test_process_row_of_this_process_agrees_with_psutil() -> None:
    before = psutil.Process().cpu_times()
    row = process_row(generate_latest(REGISTRY).decode())
    after = psutil.Process().cpu_times()
    assert row is not None and row["series"] == 1
    # both read utime + stime of /proc/self/stat (10 ms ticks)
    assert before.user + before.system - 0.02 <= row["cpu_seconds_total"] \
        <= after.user + after.system + 0.02
    rss = psutil.Process().memory_info().rss
    assert abs(row["resident_memory_bytes"] - rss) <= 0.05 * rss
    assert row["open_fds"] >= 3 and row["max_fds"] >= row["open_fds"]
    assert abs(row["start_time_seconds"] - psutil.Process().create_time()) < 1.0


def test_a_multiprocess_exposition_has_no_process_row() -> None:
    text = "# HELP x_total c\n# TYPE x_total counter\nx_total 3\n"
    assert process_row(text) is None and node_row(text) is None


def test_node_row_sums_modes_over_cpus() -> None:
    row = node_row(NODE_TEXT)
    assert row == {"cpus": 2, "cpu_total_s": 210.0, "cpu_idle_s": 190.0, "cpu_iowait_s": 2.0,
                   "cpu_steal_s": 1.0, "mem_total_bytes": 4e9, "mem_available_bytes": 1.5e9,
                   "load1": 0.75}


def _p(t: float, cpu: float, start: float = 1000.0, rss: float = 1e8) -> ProcessSample:
    return ProcessSample(t, cpu, rss, 2e8, 10.0, 1024.0, start, 1)


def test_process_rates_are_cores_and_a_restart_is_left_out_never_negative() -> None:
    rows = [_p(0.0, 1.0), _p(1.0, 1.5), _p(2.0, 2.5),
            _p(3.0, 0.2, start=1003.0),    # restarted: new start time, counter from 0
            _p(4.0, 0.45, start=1003.0),
            _p(5.0, 0.40, start=1003.0)]   # went back without a new start time: a reset too
    intervals, left_out = process_intervals(rows)
    assert [(iv.t0, round(iv.cores, 6)) for iv in intervals] == [(0.0, 0.5), (1.0, 1.0),
                                                                 (3.0, 0.25)]
    assert left_out == 2 and all(iv.cores >= 0 for iv in intervals)


def test_what_the_process_rows_are_of() -> None:
    assert describe_processes([100.0, 100.0, 100.004], 1) == (
        "process_* of the one process that answered the scrape", 1)
    what, n = describe_processes([100.0, 100.0, 250.0, 250.0], 1)
    assert n == 2 and "restarted 1 time(s)" in what
    what, n = describe_processes([100.0, 105.0, 100.0, 105.0], 1)
    assert n == 2 and "2 processes that answered the scrapes in turn" in what
    assert "summed over 3 series" in describe_processes([100.0], 3)[0]
    assert describe_processes([], 0) == ("no process_* metrics", 0)


def _n(t: float, idle: float, iowait: float, steal: float, total: float, cpus: int = 2
       ) -> NodeSample:
    return NodeSample(t, cpus, total, idle, iowait, steal, 4e9, 1e9, 0.5)


def test_node_rates_by_hand_and_a_counter_reset() -> None:
    rows = [_n(0.0, 100.0, 2.0, 1.0, 200.0),
            # 2 s on 2 CPUs = 4 CPU-s: idle 1.0, iowait 0.4, steal 0.2 -> busy 2.6 CPU-s
            _n(2.0, 101.0, 2.4, 1.2, 204.0),
            _n(3.0, 5.0, 0.0, 0.0, 6.0)]   # node_exporter's host rebooted: counters back
    intervals, reset = node_intervals(rows)
    assert reset == 1 and len(intervals) == 1
    iv = intervals[0]
    assert math.isclose(iv.busy_pct, 65.0) and math.isclose(iv.busy_cores, 1.3)
    assert math.isclose(iv.iowait_pct, 10.0) and math.isclose(iv.steal_pct, 5.0)


# -- options: a bad URL names the option and the value -----------------------------------

@pytest.mark.parametrize("url", ["node:9100", "ftp://h/metrics", "http://", "http://h:99999/m",
                                 "http://h /metrics", 9100])
def test_a_bad_node_url_names_the_option_and_the_value(url: object) -> None:
    with pytest.raises(ValueError, match=r"node metrics url \(--node-metrics\) must be an "
                       r"http\(s\) URL .*\(got " + repr(url).replace("(", r"\(")[:8]):
        NodeMetricsOptions(url=url)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 0.25 and 60 seconds"):
        NodeMetricsOptions(url="http://h:9100/metrics", every_s=0.1)
    with pytest.raises(ValueError, match=r"--process-metrics-every.*\(got 0\)"):
        ProcessMetricsOptions(every_s=0)


def test_harness_run_with_a_bad_node_url_exits_2_with_one_line() -> None:
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scenarios/production.py",
                          "--target", "http://127.0.0.1:1", "--node-metrics", "localhost:9100"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "node metrics url (--node-metrics) must be an http(s) URL" in res.stderr
    assert "(got 'localhost:9100')" in res.stderr
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scenarios/production.py",
                          "--serve", "reference", "--target-remote"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "--target-remote needs --target URL" in res.stderr


# -- the scrape loop against a real server ------------------------------------------------

class _Exposition(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = generate_latest(REGISTRY)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_scrape_failure_is_counted_and_the_rows_before_it_are_kept(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    loop = ScrapeLoop(url, 0.25, 1.0, process_row, PROCESS_COLUMNS)
    loop.start(tmp_path / "metrics" / "process.csv")
    deadline = time.monotonic() + 10
    while loop.rows < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.shutdown()
    server.server_close()
    while loop.failed < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.finish()
    counts = loop.counts()
    assert counts["rows"] >= 3 and counts["failed_scrapes"] >= 1, counts
    # refused once the server is gone (reset when the shutdown met a scrape in flight)
    assert all("could not scrape" in e for e in counts["errors"]), counts["errors"]
    assert any("refused" in e.lower() or "reset" in e.lower() for e in counts["errors"])
    rows, warnings = parse_process_csv((tmp_path / "metrics" / "process.csv").read_text())
    assert len(rows) == counts["rows"] and not warnings
    assert process_intervals(rows)[0], "successive rows of one process give rates"
    assert NODE_COLUMNS[0] == "t"


# -- real runs: a target treated as remote, a real node_exporter ---------------------------

def _node_exporter(port: int) -> subprocess.Popen[bytes]:
    assert NODE_EXPORTER is not None
    help_text = subprocess.run([NODE_EXPORTER, "--help"], capture_output=True, text=True,
                               timeout=30).stderr
    # only the collectors the harness reads: the others cost the host CPU at every scrape
    only = (["--collector.disable-defaults", "--collector.cpu", "--collector.meminfo",
             "--collector.loadavg"] if "--collector.disable-defaults" in help_text else [])
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", *only],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/metrics", proc)
    return proc


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer (exit {proc.poll()})") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[tuple[str, int]]:
    if NODE_EXPORTER is None:
        pytest.fail("prometheus-node-exporter is not installed; run `make system-deps` "
                    "(Debian package prometheus-node-exporter)", pytrace=False)
    port = free_port()
    proc = _node_exporter(port)
    try:
        yield f"http://127.0.0.1:{port}/metrics", port
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def fastapi_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FastAPI example, one uvicorn process, SQLite store: its /metrics is
    prometheus_client's default registry, process_* included."""
    artifacts = ROOT / "artifacts" / "fastapi_service"
    if not (artifacts / "manifest.json").is_file():
        artifacts = tmp_path_factory.mktemp("fastsvc-artifacts")
        subprocess.run([sys.executable, "-m", "examples.fastapi_service.train", "--out",
                        str(artifacts), "--entities", "2000", "--orders", "6000"],
                       cwd=ROOT, check=True, capture_output=True, timeout=180)
    port = free_port()
    log = tmp_path_factory.mktemp("fastsvc") / "service.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FASTSVC_", "OTEL_", "PROMETHEUS_MULTIPROC"))}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "examples.fastapi_service.serve",
                                 "--port", str(port), "--workers", "1", "--store", "sqlite",
                                 "--artifacts", str(artifacts)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/metrics", proc, 120.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


class _CpuSampler:
    """psutil's view of one process, every 0.1 s: (t, cumulative CPU s, RSS)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                with self.proc.oneshot():
                    cpu, rss = self.proc.cpu_times(), self.proc.memory_info().rss
            except psutil.Error:
                return
            self.samples.append((time.time(), cpu.user + cpu.system, rss))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> tuple[float, int]:
        """Cumulative CPU (linear between the two samples around ``t``) and the RSS of the
        sample nearest ``t``."""
        before = max((s for s in self.samples if s[0] <= t), key=lambda s: s[0])
        after = min((s for s in self.samples if s[0] >= t), key=lambda s: s[0])
        w = 0.0 if after[0] == before[0] else (t - before[0]) / (after[0] - before[0])
        nearest = before if t - before[0] <= after[0] - t else after
        return before[1] + w * (after[1] - before[1]), nearest[2]


def _harness_run(out: Path, url: str, *extra: str, scenario: str = "examples/fastapi_service/"
                 "locustfile.py", duration: str = "8s") -> tuple[subprocess.CompletedProcess[str],
                                                                 Path]:
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", scenario, "--target", url,
                          "--target-remote", "--no-profile", "--users", "4", "--duration",
                          duration, "--warmup", "1s", "--out", str(out), *extra],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, (res.stdout, res.stderr)
    return res, runs[0]


def _checks(run: Path) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in json.loads((run / "summary.json").read_text())["self_check"]}


@pytest.mark.slow
def test_a_remote_target_gets_its_cpu_and_rss_from_process_metrics_and_its_host_from_node(
        tmp_path: Path, fastapi_service: str, node_exporter: tuple[str, int]) -> None:
    from harness.analysis.diagnosis.evidence import evidence_line
    from harness.analysis.diagnosis.facts import extract_facts
    from harness.report import build_report
    from harness.run.target import find_local_service_pid
    from harness.rundir import RunDir

    node_url, _ = node_exporter
    pid = find_local_service_pid(fastapi_service)
    assert pid is not None
    sampler = _CpuSampler(pid)
    try:
        res, run = _harness_run(tmp_path, fastapi_service, "--node-metrics", node_url)
    finally:
        sampler.stop()
    assert res.returncode in (0, 1), res.stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["target"]["remote"] is True and meta["target"]["local_pid"] is None
    # the harness did not sample the target with psutil: no service rows at all
    roles = {line.split(",")[2] for line in (run / "resources.csv").read_text().splitlines()[1:]}
    assert not roles & {"service_master", "service_worker", "service_other"}, roles
    rows, _ = parse_process_csv((run / "metrics" / "process.csv").read_text())
    start, end = meta["timeline"]["measure_start"], meta["timeline"]["planned_load_end"]
    inside = [r for r in rows if start <= r.t <= end]
    assert len(inside) >= 6 and len({r.start_time_seconds for r in inside}) == 1
    first, last = inside[0], inside[-1]
    metrics_cores = (last.cpu_seconds_total - first.cpu_seconds_total) / (last.t - first.t)
    (cpu0, _), (cpu1, rss1) = sampler.at(first.t), sampler.at(last.t)
    psutil_cores = (cpu1 - cpu0) / (last.t - first.t)
    print(f"target CPU over {last.t - first.t:.1f} s: process_* {metrics_cores:.3f} cores, "
          f"psutil {psutil_cores:.3f} cores; RSS process_* "
          f"{last.resident_memory_bytes / 2**20:.1f} MiB, psutil {rss1 / 2**20:.1f} MiB")
    # Same kernel counter (utime + stime of /proc/PID/stat, 10 ms ticks) read by two
    # readers at slightly different instants: 2 readings x 2 sources x 10 ms, the service
    # answering a scrape up to ~50 ms after the harness stamped it (at each end), psutil
    # interpolated between samples 0.1 s apart: <= ~0.3 CPU-s over the ~7 s, so 0.05 cores
    # plus 5 % of the value.
    assert metrics_cores > 0.05, "the load must make the service use CPU"
    assert abs(metrics_cores - psutil_cores) <= 0.05 + 0.05 * psutil_cores
    # RSS: the same pages counted (VmRSS); the two reads are up to 0.05 s apart while the
    # service allocates and frees per request: 5 %.
    assert abs(last.resident_memory_bytes - rss1) <= 0.05 * rss1
    summary = json.loads((run / "summary.json").read_text())
    tp, host = summary["resources"]["target_process"], summary["resources"]["host"]
    assert tp["what"] == "process_* of the one process that answered the scrape"
    assert tp["source"] == f"process_cpu_seconds_total of {fastapi_service}/metrics " \
                           "(remote target)"
    assert abs(tp["cpu_mean_pct"] / 100 - psutil_cores) <= 0.08 + 0.1 * psutil_cores
    assert host["cpus"] == psutil.cpu_count() and host["source"] == \
        f"node_exporter at {node_url}"
    # node_exporter and psutil's system row read the same /proc/stat on this one machine,
    # at 1 Hz and 4 Hz over the same window: within 10 points
    system = summary["resources"]["system"]["cpu_mean_pct"]
    assert abs(host["cpu_mean_pct"] - system) <= 10.0, (host, system)
    checks = _checks(run)
    assert checks["target_resources"]["ok"] and checks["node_metrics"]["ok"], checks
    table = res.stdout
    assert "target process: cpu" in table and f"from node_exporter at {node_url}" in table
    report = build_report(RunDir(run)).read_text()
    assert f"node_exporter at {node_url}" in report and "process_cpu_seconds_total" in report
    facts = extract_facts(RunDir(run))
    assert facts.service_cpu_source == tp["source"] and facts.host is not None
    text, used = evidence_line(facts.evidence, ("resources", "node_metrics"))
    assert used["used"] == ["client", "target_metrics", "node_metrics"], used
    assert "target CPU from process_cpu_seconds_total of /metrics (remote target)" in text
    assert f"host CPU from node_exporter at {node_url}" in text


_EXPORTER = """
import sys, time
from prometheus_client import start_http_server
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
print("ready", flush=True)
x = 0
while True:  # a little CPU for the counter to count
    for i in range(20000):
        x += i * i
    time.sleep(0.01)
"""


def _exporter(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", _EXPORTER, str(port)],
                            stdout=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/metrics", proc)
    return proc


@pytest.mark.slow
def test_a_restarted_exporter_and_failed_scrapes_are_recorded_not_fatal(
        tmp_path: Path, fastapi_service: str) -> None:
    port = free_port()
    exporter = _exporter(port)
    restarted: list[subprocess.Popen[bytes]] = []

    def restart() -> None:
        time.sleep(4.0)  # 1 s warm-up + 3 s of the window
        _stop(exporter)
        time.sleep(1.5)  # scrapes of the process metrics fail meanwhile (refused)
        restarted.append(_exporter(port))

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        res, run = _harness_run(tmp_path, fastapi_service, "--node-metrics",
                                f"http://127.0.0.1:{free_port()}/metrics",
                                "--metrics-url", f"http://127.0.0.1:{port}/metrics")
    finally:
        thread.join()
        for p in [exporter, *restarted]:
            _stop(p)
    assert res.returncode in (0, 1), res.stderr
    assert "Traceback" not in res.stderr
    status = json.loads((run / "metrics" / "process_status.json").read_text())
    assert status["failed_scrapes"] >= 1 and all("could not scrape" in e
                                                 for e in status["errors"]), status
    assert "restarted 1 time(s)" in status["what"], status
    rows, _ = parse_process_csv((run / "metrics" / "process.csv").read_text())
    intervals, left_out = process_intervals(rows)
    assert left_out >= 1 and intervals and all(iv.cores >= 0 for iv in intervals)
    summary = json.loads((run / "summary.json").read_text())
    tp = summary["resources"]["target_process"]
    assert tp["left_out"] >= 1 and tp["cpu_mean_pct"] >= 0
    node = json.loads((run / "metrics" / "node_status.json").read_text())
    assert node["ok"] is False and node["failed_scrapes"] == node["scrapes"] >= 5, node
    checks = _checks(run)
    assert not checks["target_resources"]["ok"] and "scrapes failed" in \
        checks["target_resources"]["detail"]
    assert checks["node_metrics"]["severity"] == "warning" and not checks["node_metrics"]["ok"]
    assert "no host figures" in checks["node_metrics"]["detail"]
    assert "host" not in summary["resources"]


@pytest.mark.slow
def test_the_reference_service_under_gunicorn_exports_no_process_metrics(
        tmp_path: Path, reference_service: Any) -> None:
    svc = reference_service()
    res, run = _harness_run(tmp_path, svc.url, scenario="scenarios/production.py",
                            duration="3s")
    assert res.returncode in (0, 1), res.stderr
    status = json.loads((run / "metrics" / "process_status.json").read_text())
    assert status["ok"] is False and status["rows"] == 0 and status["scrapes"] >= 3
    assert "multiprocess prometheus_client" in status["what"], status
    check = _checks(run)["target_resources"]
    assert not check["ok"] and check["severity"] == "info"
    assert "its CPU and memory were not measured" in check["detail"]
    assert "target_process" not in json.loads((run / "summary.json").read_text())["resources"]


def test_an_endpoint_that_never_answers_is_given_up_after_three_scrapes(tmp_path: Path) -> None:
    loop = ScrapeLoop(f"http://127.0.0.1:{free_port()}/metrics", 0.25, 1.0, process_row,
                      PROCESS_COLUMNS, give_up=3)
    loop.start(tmp_path / "metrics" / "process.csv")
    deadline = time.monotonic() + 10
    while not loop.gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.finish()
    counts = loop.counts()
    assert counts["gave_up"] and counts["scrapes"] == counts["failed_scrapes"] == 3, counts
    assert counts["rows"] == 0 and "refused" in counts["errors"][0].lower()


def _host(cpu_pct: float, steal: float = 0.0, avail: int = 2 * 2**30) -> Any:
    from harness.rundir.records import HostResources

    return HostResources("node_exporter at http://h:9100/metrics", "http://h:9100/metrics", 4,
                         20, 19, 0, cpu_pct, cpu_pct + 2, cpu_pct + 5, 4 * cpu_pct / 100, 0.5,
                         steal, 8 * 2**30, 6 * 2**30, avail, 3.5, 4.0)


def test_the_service_host_rules_say_their_sources() -> None:
    from harness.analysis.diagnosis.engine import diagnose_facts
    from harness.analysis.diagnosis.facts import Facts
    from harness.analysis.diagnosis.remotehost import service_host

    source = "process_cpu_seconds_total of http://h:8000/metrics (remote target)"
    # the host at 95 % of 4 cores; the target's process 1.2 cores = 30 %: others take 65 %
    f = Facts(run_id="r", requests=500, remote=True, service_cpu_mean_pct=120.0,
              service_cpu_source=source, host=_host(95.0, steal=12.0, avail=512 * 2**20))
    found = {x.title.split(":")[0]: x for x in service_host(f)}
    crowded = found["the service's host is CPU-saturated and other processes take 65.0 % of it"]
    assert crowded.severity == "warning"
    assert crowded.evidence[0] == ("service host CPU 95.0 % of 4 cores, 3.80 busy cores (mean "
                                   "over the window; node_exporter at http://h:9100/metrics)")
    assert crowded.evidence[1] == (f"share of the host: the target's process 30.0 % ({source}), "
                                   "everything else 65.0 %")
    assert "the hypervisor took 12.0 % of the service host's CPU time (steal)" in found
    assert "the service's host is short of memory" in found
    # the service itself fills its host: 3.8 cores of 4 -> critical, and service_cpu agrees
    busy = Facts(run_id="r", requests=500, remote=True, service_cpu_mean_pct=380.0,
                 service_cpu_source=source, host=_host(97.0))
    (sat,) = service_host(busy)
    assert sat.severity == "critical" and sat.title == (
        "the service's host's CPUs are saturated by the service")
    rules = {x.data["rule"]: x for x in diagnose_facts(busy)}
    assert rules["service_cpu"].title == "the service uses every CPU of its host"
    assert rules["service_cpu"].evidence[-1].startswith(
        "evidence: client histograms, target CPU from process_cpu_seconds_total of /metrics "
        "(remote target), host CPU from node_exporter at http://h:9100/metrics; not in this "
        "run: Server-Timing stages")
    # without node_exporter: the evidence line says what would add it
    alone = Facts(run_id="r", requests=500, remote=True, service_cpu_mean_pct=95.0,
                  service_cpu_source=source)
    assert service_host(alone) == []
    from harness.analysis.diagnosis.evidence import evidence_line

    text, data = evidence_line(alone.evidence, ("resources", "node_metrics"))
    assert data["missing"][-1] == "node_metrics" and "resources" not in data["missing"]
    assert "harness run --node-metrics URL of a node_exporter on the service's host" in text
