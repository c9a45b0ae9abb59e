"""Distributed load across hosts, on one machine: the master, two workers and the target
each in a network namespace of its own (tests/netns_support.py), joined by a bridge.

What is checked, with real processes end to end (`harness run --workers 2
--remote-workers 2` in one namespace, `harness worker --master ADDR:PORT` in two others,
the known-latency server in a fourth):

- the workers get the locustfile from the master (none is given to them);
- the merged histograms equal the union of the workers' (bucket by bucket: each worker
  names its requests with its pid, and the run's all-requests histogram equals the sum
  of the per-worker ones), and the counts equal the target's own log;
- a worker whose clock is 2.5 s off (simulated: the host's wall clock cannot be moved
  for one namespace) is measured and corrected, and its requests land in the right
  intervals;
- a worker killed mid-run: the run goes on, says which worker was lost and when, keeps
  what it reported, and ends degraded (exit 3) with the self-check's reason;
- a worker of another harness version is refused, and both versions are named.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hdrh.log import HistogramLogReader
from netns_support import Hosts, copy_with_version, unavailable

from harness.load.recorder import new_histogram

sys.path.insert(0, str(Path(__file__).parent))
from known_latency_server import read_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]
MASTER_PORT = 5557
LOCUSTFILE = """
import os
from locust import HttpUser, constant, task

class Predict(HttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        pid = os.getpid()
        # one name for all; the worker as a tag: the run's "predict" histogram is the
        # master's merge, each tagged one a single worker's
        self.client.get(f"/predict/{pid}", name="predict", context={"input_class": f"w{pid}"})
"""

why_not = unavailable()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(why_not is not None, reason=str(why_not))]


@pytest.fixture(scope="module")
def hosts():
    h = Hosts(["master", "w1", "w2", "target"])
    yield h
    h.close()


@pytest.fixture
def target(hosts: Hosts, tmp_path: Path):
    """The known-latency server in the target namespace: (url, its request log)."""
    log = tmp_path / "truth.csv"
    port = 8321
    proc = hosts.popen("target", [sys.executable, str(ROOT / "tests" / "known_latency_server.py"),
                                  "--host", hosts.addr("target"), "--port", str(port),
                                  "--latency-ms", "5", "--log", str(log), "--print-port"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == str(port)
    yield f"http://{hosts.addr('target')}:{port}", log
    proc.terminate()
    proc.wait(timeout=10)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _master(hosts: Hosts, tmp_path: Path, url: str, *extra: str, remote: int = 2,
            timeout: str = "60s") -> subprocess.Popen[str]:
    scenario = tmp_path / "scenario.py"
    scenario.write_text(LOCUSTFILE)
    argv = [*HARNESS, "run", str(scenario), "--target", url, "--rate", "40",
            "--arrival", "constant", "--users", "8", "--duration", "8s", "--warmup", "1s",
            "--workers", "2", "--remote-workers", str(remote),
            "--master-bind", f"{hosts.addr('master')}:{MASTER_PORT}",
            "--expect-workers-timeout", timeout, "--no-profile", "--out", str(tmp_path / "runs"),
            "--json", *extra]
    return hosts.popen("master", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, cwd=ROOT, env=_env())


def _worker(hosts: Hosts, name: str, **env: str) -> subprocess.Popen[str]:
    # no --locustfile: the master's is sent over; cwd elsewhere so that nothing of the
    # master's directory is at hand
    return hosts.popen(name, [*HARNESS, "worker", "--master",
                              f"{hosts.addr('master')}:{MASTER_PORT}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       cwd="/", env=_env(**env))


def _run_dir(tmp_path: Path) -> Path:
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return run


def _histograms(run: Path) -> dict[str | None, object]:
    """The run's whole client_uncorrected histograms of "GET predict": None -> the merged
    one, worker pid (str) -> that worker's (its tag)."""
    index = json.loads((run / "latency" / "series.json").read_text())
    out: dict[str | None, object] = {}
    for entry in index["series"]:
        if entry["metric"] == "client_uncorrected" and entry["name"] == "GET predict":
            reader = HistogramLogReader(str(run / "latency" / entry["file"]), new_histogram())
            total = new_histogram()
            while reader.add_next_interval_histogram(total) is not None:
                pass
            tag = entry["tag"]
            out[None if tag is None else tag.rsplit("w", 1)[1]] = total
    return out


def _max_lateness_us(run: Path) -> int:
    index = json.loads((run / "latency" / "series.json").read_text())
    (entry,) = [e for e in index["series"] if e["metric"] == "lateness" and e["tag"] is None]
    reader = HistogramLogReader(str(run / "latency" / entry["file"]), new_histogram())
    total = new_histogram()
    while reader.add_next_interval_histogram(total) is not None:
        pass
    return int(total.get_max_value())


def _buckets(h) -> Counter:
    return Counter({v.value_iterated_to: v.count_at_value_iterated_to
                    for v in h.get_recorded_iterator()})


def test_two_remote_workers_merge_exactly_and_count_what_the_target_saw(
        hosts: Hosts, target, tmp_path: Path) -> None:
    url, truth_log = target
    master = _master(hosts, tmp_path, url)
    workers = [_worker(hosts, "w1"), _worker(hosts, "w2", HARNESS_WORKER_CLOCK_SKEW_S="2.5")]
    out, err = master.communicate(timeout=180)
    codes = [w.wait(timeout=60) for w in workers]
    assert master.returncode in (0, 3), err
    assert codes == [0, 0], [w.stderr.read() for w in workers if w.stderr]
    assert "harness worker --master" in err  # the master said what to run on the workers
    run = _run_dir(tmp_path)
    # Complete, unless the machine starved the load generators (master, 2 workers and the
    # target on 2 shared cores): then their own lateness is a visible part of the latency
    # and the run is rightly degraded by the checks that say so, and by nothing else.
    checks = json.loads((run / "summary.json").read_text())["self_check"]
    failed = {c["check"] for c in checks if not c["ok"] and c["severity"] == "error"}
    assert failed <= {"loadgen_late", "loadgen_cpu"}, (failed, err)
    assert (master.returncode == 0) == (not failed), (master.returncode, failed)
    load = json.loads((run / "load.json").read_text())
    detail = load["workers_detail"]
    assert [w["remote"] for w in detail] == [True, True] and load["workers_lost"] == []
    # the skewed worker's offset was measured (within the round trip) and corrected
    offsets = sorted(w["offset_ms"] for w in detail)
    assert abs(offsets[0] + 2500.0) < 50.0 and abs(offsets[1]) < 50.0, detail
    assert all(w["checks"] >= 1 and abs(w["run_offset_ms"]) < 50.0 for w in detail), detail
    # exact merge: the all-requests histogram is the union of the per-worker ones
    hists = _histograms(run)
    per_worker = {pid: h for pid, h in hists.items() if pid is not None}
    assert sorted(per_worker) == sorted(str(w["pid"]) for w in detail)
    union = Counter()
    for h in per_worker.values():
        union.update(_buckets(h))
    assert _buckets(hists[None]) == union
    # every request the target logged, counted once, per worker (pid in the name)
    truth = Counter(r["path"].rsplit("/", 1)[1] for r in read_log(truth_log)
                    if r["path"].startswith("/predict/"))
    harness = {pid: h.get_total_count() for pid, h in per_worker.items()}
    assert harness == dict(truth)
    # the workers' counts of responses (and of closed connections) are summed
    conns = load["client_overhead"]["connections"]
    assert conns["responses"] == sum(truth.values()) and conns["closed"] in (0, conns["responses"])
    # aligned to the master's clock: the skewed worker kept the schedule. Left on its own
    # clock it would have read every arrival of its first 2.5 s as due at once (starts
    # 2.5 s late); the tolerance, 1 s, is far above a busy machine's loop lateness
    # (tens of ms under `make test-stress`) and far below the skew.
    rows = [json.loads(x) for x in (run / "intervals.jsonl").read_text().splitlines()]
    assert rows[0]["t"] == pytest.approx(load["timeline"]["load_start"], abs=1e-6)
    assert _max_lateness_us(run) < 1_000_000
    assert sum(r["requests"] for r in rows) == sum(truth.values())
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == ("degraded" if failed else "complete"), meta["notes"]


def test_a_worker_killed_mid_run_leaves_a_degraded_run_that_says_so(
        hosts: Hosts, target, tmp_path: Path) -> None:
    url, truth_log = target
    master = _master(hosts, tmp_path, url)
    workers = [_worker(hosts, "w1"), _worker(hosts, "w2")]
    # kill w2's worker once the load has run a few seconds
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/intervals.jsonl")):
        time.sleep(0.2)
    time.sleep(3.0)
    pids = subprocess.run(["ip", "netns", "pids", hosts.ns["w2"]], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    killed_at = time.time()
    out, err = master.communicate(timeout=180)
    workers[0].wait(timeout=60)
    assert master.returncode == 3, err  # degraded: these numbers lack a worker's share
    run = _run_dir(tmp_path)
    load = json.loads((run / "load.json").read_text())
    (lost,) = load["workers_lost"]
    # Locust calls a worker missing after 3 heartbeats (1 s apart) did not come, and the
    # master looks every second: ~4 s; 10 s leaves a busy machine room
    assert 0.0 <= lost["lost_at"] - killed_at <= 10.0, (lost, killed_at)
    assert lost["why"] == "stopped sending heartbeats"
    # its share of the schedule after it was lost counts as not sent: the achieved rate
    # falls short of the target, as it did at the service
    measured = load["measured"]
    assert measured["dropped"] > 0 and measured["achieved_rps"] < 0.95 * measured["scheduled"] / 9
    assert lost["requests_reported"] > 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "degraded"
    assert any("was lost" in n for n in meta["notes"]), meta["notes"]
    summary = json.loads((run / "summary.json").read_text())
    (check,) = [c for c in summary["self_check"] if c["check"] == "workers_lost"]
    assert not check["ok"] and check["severity"] == "error" and lost["id"] in check["detail"]
    # nothing already merged is lost: every request the survivor made is counted, and of
    # the lost worker's, at most what it had not yet reported (~3 s of its 20 req/s)
    truth = Counter(r["path"].rsplit("/", 1)[1] for r in read_log(truth_log)
                    if r["path"].startswith("/predict/"))
    counted = {pid: h.get_total_count() for pid, h in _histograms(run).items() if pid}
    survivor = next(w for w in load["workers_detail"] if not w["lost"])
    assert counted[str(survivor["pid"])] == truth[str(survivor["pid"])]
    victim = next(w for w in load["workers_detail"] if w["lost"])
    assert 0 <= truth[str(victim["pid"])] - counted.get(str(victim["pid"]), 0) <= 100


def test_a_worker_of_another_version_is_refused(hosts: Hosts, target,
                                                tmp_path: Path) -> None:
    url, _log = target
    other = copy_with_version(ROOT, tmp_path / "other", "0.0.9")
    master = _master(hosts, tmp_path, url, remote=1, timeout="20s")
    worker = hosts.popen("w1", [sys.executable, "-m", "harness.cli", "worker", "--master",
                                f"{hosts.addr('master')}:{MASTER_PORT}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         cwd=str(other), env=_env(PYTHONPATH=str(other)))
    _out, werr = worker.communicate(timeout=90)
    _out, err = master.communicate(timeout=120)
    from harness import __version__

    assert worker.returncode == 2, werr
    assert (f"harness worker: refused by the master: the master runs harness {__version__} "
            "and the worker on ") in werr and "runs harness 0.0.9" in werr
    # the master does not start without it, and says who was refused
    assert master.returncode == 2, err
    assert "refused" in err and "harness 0.0.9" in err
