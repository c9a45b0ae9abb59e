"""The load driver's master and workers when something goes wrong, with real processes:
workers that never connect or die at start, a worker killed mid-run (the final-report
timeout), a worker frozen mid-run (the report grace), and a worker started by hand.

Each worker names its requests with its pid (``GET predict PID``, path ``/predict/PID``),
so the harness's per-name histograms and the server's own log (the truth) can be compared
worker by worker.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import free_port
from hdrh.log import HistogramLogReader

from harness.load.recorder import new_histogram

sys.path.insert(0, str(Path(__file__).parent))
from known_latency_server import read_log, start_subprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _constant(name: str) -> float:
    """A constant of harness/load/distributed.py, read without importing it (importing
    Locust would monkey-patch this test process)."""
    tree = ast.parse((ROOT / "harness" / "load" / "distributed.py").read_text())
    (value,) = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == [name]]
    return float(value)


REPORT_GRACE_S, FINAL_TIMEOUT_S = _constant("REPORT_GRACE_S"), _constant("FINAL_TIMEOUT_S")
LOCUSTFILE = """
import os
from locust import HttpUser, constant, task

class Predict(HttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        pid = os.getpid()
        self.client.get(f"/predict/{pid}", name=f"predict {pid}")
"""
DIES_IN_WORKERS = "import os, sys\nif '--worker' in sys.argv:\n    os._exit(7)\n" + LOCUSTFILE
RATE = 40.0  # req/s over all workers, open model


@pytest.fixture
def server(tmp_path: Path):
    log = tmp_path / "truth.csv"
    proc, port = start_subprocess(["--log", str(log), "--latency-ms", "5"])
    yield f"http://127.0.0.1:{port}", log
    proc.terminate()
    proc.wait(timeout=5)


def _config(tmp_path: Path, host: str, body: str = LOCUSTFILE, **over: Any) -> Path:
    scenario = tmp_path / "scenario.py"
    scenario.write_text(body)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    config = {"locustfile": str(scenario), "host": host, "run_dir": str(run_dir),
              "model": "open", "rate": RATE, "arrival": "constant", "users": 8,
              "duration_s": 4.0, "warmup_s": 0.0, "interval_s": 1.0, "workers": 2,
              "seed": 1, **over}
    path = run_dir / "driver.json"
    path.write_text(json.dumps(config))
    return path


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness.load.driver", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _workers(driver: subprocess.Popen[str]) -> list[psutil.Process]:
    return [p for p in psutil.Process(driver.pid).children()
            if "--worker" in p.cmdline()]


def _lines_until(driver: subprocess.Popen[str], kind: str) -> list[tuple[float, dict]]:
    """(time read, message) of the driver's JSON lines up to the first of type ``kind``."""
    assert driver.stdout is not None
    seen = []
    for line in driver.stdout:
        seen.append((time.time(), json.loads(line)))
        if seen[-1][1]["type"] == kind:
            return seen
    raise AssertionError(f"the driver ended without a {kind!r} line: {seen}")


def _rest(driver: subprocess.Popen[str], timeout: float) -> tuple[list[tuple[float, dict]], str]:
    assert driver.stdout is not None and driver.stderr is not None
    seen = [(time.time(), json.loads(line)) for line in driver.stdout]
    err = driver.stderr.read()
    driver.wait(timeout=timeout)
    return seen, err


def _leftover_workers(driver_pid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "--parent-pid" in cmd and cmd[cmd.index("--parent-pid") + 1] == str(driver_pid) \
                and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p.info["pid"])
    return out


def _per_worker(run_dir: Path, truth_log: Path) -> tuple[dict[int, int], dict[int, int]]:
    """{worker pid: requests} as the driver recorded them (its hlogs, read with hdrh) and as
    the server logged them."""
    index = json.loads((run_dir / "latency" / "series.json").read_text())
    harness = {}
    for entry in index["series"]:
        if entry["metric"] == "client_uncorrected" and entry["tag"] is None:
            reader = HistogramLogReader(str(run_dir / "latency" / entry["file"]),
                                        new_histogram())
            total = new_histogram()
            while reader.add_next_interval_histogram(total) is not None:
                pass
            harness[int(entry["name"].rsplit(" ", 1)[1])] = total.get_total_count()
    truth = Counter(int(r["path"].rsplit("/", 1)[1]) for r in read_log(truth_log)
                    if r["path"].startswith("/predict/"))
    return harness, dict(truth)


def _intervals_once_each(run_dir: Path, load_start: float) -> list[dict]:
    """intervals.jsonl holds each 1 s interval once, in order, from the load's start."""
    rows = [json.loads(x) for x in (run_dir / "intervals.jsonl").read_text().splitlines()]
    assert [round(r["t"] - load_start, 3) for r in rows] == [float(k) for k in range(len(rows))]
    return rows


@pytest.mark.parametrize("body, local, timeout, why", [
    # two workers expected from other hosts, none comes (none local: a local one may
    # take longer than 1.5 s to import Locust on a busy machine)
    (LOCUSTFILE, 0, 1.5, "0 of 2 workers connected within 1.5 s (--expect-workers-timeout)"),
    # the local workers die importing the locustfile: seen at once, long before the 60 s
    pytest.param(DIES_IN_WORKERS, 2, 60, "a local worker exited with code 7",
                 marks=pytest.mark.slow),
])
def test_workers_that_never_connect_or_die_at_start(tmp_path: Path, body: str, local: int,
                                                    timeout: float, why: str) -> None:
    # the run does not start, says why, and leaves nothing behind
    config = _config(tmp_path, "http://127.0.0.1:9", body, local_workers=local,
                     expect_workers_timeout_s=timeout)
    driver = _start(config)
    out, err = driver.communicate(timeout=90)
    assert driver.returncode == 3, err
    # no "started" line: the run never began; only what the master waited for
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["waiting"]
    assert f"driver: could not start: {why}" in err.splitlines()
    assert not (tmp_path / "run" / "load.json").exists()
    assert _leftover_workers(driver.pid) == []


@pytest.mark.slow
def test_a_worker_started_by_hand_is_merged_like_a_local_one(tmp_path: Path, server) -> None:
    host, truth_log = server
    port = free_port()
    config = _config(tmp_path, host, local_workers=1, master_port=port)
    driver = _start(config)
    remote = subprocess.Popen(
        [sys.executable, "-m", "harness.load.driver", "--worker", "--master-host",
         "127.0.0.1", "--master-port", str(port), "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines, err = _rest(driver, timeout=90)
    finally:
        remote.wait(timeout=30)
    assert driver.returncode == 0, err
    load = json.loads((tmp_path / "run" / "load.json").read_text())
    assert (load["workers"], load["workers_reported"]) == (2, 2)
    harness, truth = _per_worker(tmp_path / "run", truth_log)
    assert remote.pid in harness and harness == truth  # both workers, every request
    assert remote.returncode == 0, remote.stderr.read() if remote.stderr else ""


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_only_its_unreported_requests(tmp_path: Path,
                                                                    server) -> None:
    """A worker SIGKILLed after the first merged interval: the run goes on, Locust marks the
    worker missing (no heartbeat for ~3 s), so at the end the master does not wait for its
    final report (FINAL_TIMEOUT_S is for workers still heard from), and writes every
    interval once; load.json names the lost worker. The dead worker's requests are
    counted up to its last report: Locust's worker report comes every 3 s and carries the
    intervals closed by then, so at most 3 s + the open 1 s interval at its 20 req/s are
    lost (and never more counted than the server saw). The survivor's requests are all counted."""
    host, truth_log = server
    driver = _start(_config(tmp_path, host, stop_grace_s=2.0))
    started = _lines_until(driver, "started")[-1][1]
    _lines_until(driver, "interval")
    victim, survivor = _workers(driver)
    victim.kill()
    lines, err = _rest(driver, timeout=90)
    done_at = lines[-1][0]
    assert driver.returncode == 0, err
    assert lines[-1][1]["type"] == "done"
    load = json.loads((tmp_path / "run" / "load.json").read_text())
    assert (load["workers"], load["workers_reported"]) == (2, 1)
    # not the final-report timeout: the lost worker is not waited for (the tolerance, 10 s,
    # is for a busy machine's slow stop; FINAL_TIMEOUT_S is 15 s)
    waited = done_at - started["load_end"]
    assert waited <= 2.0 + 10.0 < 2.0 + FINAL_TIMEOUT_S, waited
    (lost,) = load["workers_lost"]
    assert lost["why"] == "stopped sending heartbeats" and lost["requests_reported"] > 0
    run = tmp_path / "run"
    rows = _intervals_once_each(run, started["load_start"])
    harness, truth = _per_worker(run, truth_log)
    assert harness[survivor.pid] == truth[survivor.pid] > 0
    lost = truth[victim.pid] - harness.get(victim.pid, 0)
    assert 0 <= lost <= (3.0 + 1.0) * RATE / 2 + 5, (lost, harness, truth)
    assert sum(r["requests"] for r in rows) == sum(harness.values()) \
        == load["measured"]["requests"]
    assert _leftover_workers(driver.pid) == []


@pytest.mark.slow
def test_a_frozen_worker_is_waited_for_then_merged_late_never_lost(tmp_path: Path,
                                                                   server) -> None:
    """A worker SIGSTOPped for 14 s mid-run: the master writes the intervals it has no
    report for once REPORT_GRACE_S + the interval (11 s) have passed since their end, not
    before, without the frozen worker's share; when the worker wakes up its late intervals
    are added to the next unwritten one. Every request either worker made is counted,
    exactly as the server logged them, and both final reports arrive."""
    host, truth_log = server
    driver = _start(_config(tmp_path, host, duration_s=20.0))
    started = _lines_until(driver, "started")[-1][1]
    _lines_until(driver, "interval")
    frozen, _other = _workers(driver)
    frozen.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        seen: list[tuple[float, dict]] = []
        assert driver.stdout is not None
        while time.time() < stopped_at + 14.0:
            line = driver.stdout.readline()
            seen.append((time.time(), json.loads(line)))
    finally:
        frozen.send_signal(signal.SIGCONT)
    lines, err = _rest(driver, timeout=90)
    assert driver.returncode == 0, err
    load = json.loads((tmp_path / "run" / "load.json").read_text())
    assert (load["workers"], load["workers_reported"]) == (2, 2)
    # intervals that ended after the freeze, written while it lasted: by the grace only
    grace = REPORT_GRACE_S + 1.0
    late = [(at, m) for at, m in seen if m["type"] == "interval" and m["t"] + 1.0 > stopped_at]
    assert late, seen
    assert all(at >= m["t"] + 1.0 + grace - 0.1 for at, m in late), [
        (round(at - m["t"] - 1.0, 2), m["t"]) for at, m in late]
    run = tmp_path / "run"
    rows = _intervals_once_each(run, started["load_start"])
    assert len(rows) >= 20
    harness, truth = _per_worker(run, truth_log)
    assert frozen.pid in harness and harness == truth
    assert sum(r["requests"] for r in rows) == sum(truth.values())
