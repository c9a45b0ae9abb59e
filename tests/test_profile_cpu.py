"""Are py-spy's on-CPU samples CPU time? The check by value, the kernel's figures against
psutil, and py-spy (non-blocking, the default, and blocking) on a real multi-threaded
process whose threads mostly wait, as a model server's do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from collector_support import python, wait_for

from harness.run.collectors.base import CollectorContext
from harness.run.collectors.profile import ProfileCollector
from harness.run.collectors.profilecpu import Clock, cost, oncpu_check, read_clock, schedstat

# A server's shape: an asyncio loop in the main thread, a thread pool, threads blocked on
# an event, a queue and a multiprocessing pipe, and one thread that computes 20 ms of
# every 100 ms (its "requests").
SERVER = '''
import asyncio, concurrent.futures, multiprocessing as mp, queue, threading, time
ev, q, sq = threading.Event(), queue.Queue(), mp.SimpleQueue()
for target in (ev.wait, ev.wait, q.get, q.get, sq.get):
    threading.Thread(target=target, daemon=True).start()
pool = concurrent.futures.ThreadPoolExecutor(4)
for _ in range(4):
    pool.submit(time.sleep, 0)
def handle_requests():
    while True:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.02:
            sum(range(500))
        time.sleep(0.08)
if BUSY:
    threading.Thread(target=handle_requests, daemon=True).start()
print("ready", flush=True)
async def main():
    await asyncio.sleep(3600)
asyncio.run(main())
'''


def clock(t: float, cpu: float, runq: float | None) -> Clock:
    return Clock(t, cpu, runq)


@pytest.mark.parametrize(("sampled", "cpu", "runq", "verdict"), [
    (1.0, 1.0, 0.0, "ok"),
    (1.4, 1.0, 0.0, "ok"),                  # under 1.5x the CPU
    (4.0, 1.0, 2.0, "runnable_counted"),    # 4 > 1.5 x 1 but <= 1.5 x (1 + 2)
    (8.0, 1.0, 2.0, "idle_counted"),        # 8 > 1.5 x 3, 5 s over
    (0.4, 0.0, 0.0, "ok"),                  # 0.4 s over but under 5 % of a core of 10 s
    (0.6, 0.0, 0.0, "idle_counted"),        # 0.6 s: over the floor (0.5 s)
    (4.0, 1.0, None, "over_cpu"),           # no run-queue figure
    # chance: py-spy's intervals are random, so 20 expected samples give 32 now and then
    # (4 standard deviations: up to 37.9), and 24 expected give 40 (CI's busy machine)
    (1.6, 1.0, 0.0, "ok"),                  # 1.6x and 0.6 s over, but 32 <= 20 + 17.9
    (2.0, 1.0, 0.2, "runnable_counted"),    # 40 > 20 + 17.9, but 40 <= 24 + 19.6
])
def test_verdicts_by_value(sampled: float, cpu: float, runq: float | None,
                           verdict: str) -> None:
    rate = 20
    start = clock(100.0, 5.0, None if runq is None else 1.0)
    end = clock(110.0, 5.0 + cpu, None if runq is None else 1.0 + runq)
    got = oncpu_check([(7, round(sampled * rate), start, end)], rate)
    assert got["verdict"] == verdict
    row = got["processes"]["7"]
    assert row["sampled_s"] == pytest.approx(sampled)
    assert row["cpu_s"] == pytest.approx(cpu) and row["span_s"] == 10.0
    assert row["sampled_core_pct"] == pytest.approx(10 * sampled)


def test_the_detail_says_why_and_names_blocking_mode() -> None:
    proc = (7, 80, clock(0.0, 0.0, 0.0), clock(10.0, 1.0, 2.0))  # 4 s sampled
    nonblocking = oncpu_check([proc], 20, False, 0.3)
    assert nonblocking["detail"] == (
        "on-CPU samples 4.00 s vs CPU 1.00 s + run-queue 2.00 s (pid 7: 40 % of a core "
        "sampled, 10 % used; 30 % of the samples at a waiting call): the samples include "
        "time runnable but waiting for a CPU (a busy machine)")
    blocking = oncpu_check([proc], 20, True, 0.78)
    assert blocking["verdict"] == "runnable_counted" and blocking["blocking"] is True
    assert "py-spy's blocking mode makes the threads it stops runnable" in blocking["detail"]


def test_totals_and_processes_without_both_clocks() -> None:
    a = (1, 40, clock(0.0, 0.0, 0.0), clock(10.0, 1.0, 0.5))     # 2 s sampled
    b = (2, 20, clock(2.0, 3.0, 0.0), clock(10.0, 3.5, 0.25))    # 1 s sampled
    gone = (3, 99, clock(0.0, 0.0, 0.0), None)                   # ended during the window
    got = oncpu_check([a, b, gone], 20)
    assert set(got["processes"]) == {"1", "2"}
    assert (got["sampled_s"], got["cpu_s"], got["runq_s"]) == (3.0, 1.5, 0.75)
    assert got["ratio"] == 2.0 and got["verdict"] == "runnable_counted"
    assert got["detail"].startswith("on-CPU samples 3.00 s vs CPU 1.50 s + run-queue 0.75 s")
    # one process counting waiting threads makes the whole profile suspect
    idle = (4, 200, clock(0.0, 0.0, 0.0), clock(10.0, 0.01, 0.1))
    assert oncpu_check([a, b, idle], 20)["verdict"] == "idle_counted"
    assert oncpu_check([gone], 20) == {
        "verdict": "unknown", "processes": {}, "blocking": False, "wait_leaf_share": None,
        "detail": "no sampled process was measured from before its py-spy started to after "
                  "it exited"}


def test_cost_by_value() -> None:
    got = cost(pyspy_cpu_s=0.5, service_cpu_s=5.0, span_s=10.0,
               paused={"11": (0.8, 8.0), "12": (0.2, 10.0)}, blocking=True)
    assert got == {"pyspy_cpu_s": 0.5, "blocking": True, "pyspy_core_pct": 5.0,
                   "service_cpu_share": 0.1, "paused_share": 0.1,
                   "paused_share_by_pid": {"11": 0.1, "12": 0.02}}
    # non-blocking py-spy stops nothing; unknown CPU gives no shares
    got = cost(pyspy_cpu_s=None, service_cpu_s=None, span_s=10.0, paused={"11": (0.8, 8.0)},
               blocking=False)
    assert got["paused_share"] is None and got["pyspy_core_pct"] is None


def test_schedstat_run_time_agrees_with_psutil() -> None:
    """The kernel's run time (ns, per thread) against psutil's CPU (clock ticks): within
    two ticks per read and 5 %."""
    proc = python("import time\nt = time.time()\nwhile time.time() - t < 30: pass\n")
    try:
        wait_for(lambda: (psutil.Process(proc.pid).cpu_times().user or 0) > 0.05, 10, "CPU use")
        before = read_clock(proc.pid)
        time.sleep(1.0)
        after = read_clock(proc.pid)
        assert before.run_s is not None and after.run_s is not None
        assert after.cpu_s is not None and before.cpu_s is not None
        run, cpu = after.run_s - before.run_s, after.cpu_s - before.cpu_s
        assert cpu > 0.1
        assert run == pytest.approx(cpu, abs=0.04 + 0.05 * cpu)
        assert after.runq_s is not None and after.runq_s >= before.runq_s  # type: ignore[operator]
    finally:
        proc.kill()
        proc.wait()
    assert schedstat(proc.pid) is None


def _profile(tmp_path: Path, busy: bool, **options: object) -> tuple[dict, dict]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = python(f"BUSY = {busy}\n" + SERVER)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        now = time.time()
        collector = ProfileCollector()
        collector.start(CollectorContext(run_dir, proc.pid, None, now + 0.3, now + 4.3,
                                         {"rate_hz": 50, **options}))
        time.sleep(4.6)
        status = collector.stop()
    finally:
        proc.kill()
        proc.wait()
    on_disk = json.loads((run_dir / "profile" / "status.json").read_text())
    assert {k: v for k, v in on_disk.items() if k != "by_view"} == status
    return status, on_disk


@pytest.mark.slow
def test_nonblocking_does_not_count_waiting_threads(tmp_path: Path) -> None:
    """11 threads waiting (event, queue, pool, pipe, the event loop): py-spy --nonblocking,
    the default, samples none of them as on-CPU."""
    status, _ = _profile(tmp_path, busy=False)
    assert status["ok"] and status["nonblocking"] is True
    assert status["samples"] <= 2  # 4 s x 50 Hz x 11 threads = 2200 chances
    check = status["oncpu_check"]
    assert check["verdict"] == "ok" and check["sampled_s"] <= 0.04
    assert status["cost"]["blocking"] is False and status["cost"]["paused_share"] is None


@pytest.mark.slow
def test_nonblocking_samples_are_cpu_plus_run_queue(tmp_path: Path) -> None:
    """One thread computing a fifth of the time next to the idle ones: its samples are its
    CPU plus its wait for a CPU (on a busy machine), and the stage map chosen for a service
    of no known kind is the generic one, its own code explained."""
    status, _ = _profile(tmp_path, busy=True)
    check = status["oncpu_check"]
    assert check["verdict"] in ("ok", "runnable_counted"), check
    assert check["cpu_s"] > 0.2
    kernel = check["cpu_s"] + check["runq_s"]
    assert 0.4 * kernel <= check["sampled_s"] <= 1.5 * kernel, check
    smap = status["stage_map"]
    assert (smap["name"], smap["chosen"]) == ("python_web", "auto")
    assert smap["other_share"] < 0.15
    assert set(smap["candidates"]) == {"mlserver", "python_web", "reference_service"}
    assert smap["candidates"]["mlserver"]["eligible"] is False
    assert status["cost"]["pyspy_core_pct"] > 0


@pytest.mark.slow
def test_blocking_mode_reports_what_it_stopped(tmp_path: Path) -> None:
    """py-spy's blocking mode (``nonblocking: false``, --profile-blocking) is recorded as such,
    with the share of the window it may have held the process stopped. Whether it counts
    the woken threads depends on how long they queue for a CPU (5 to 38 samples in 5 s on
    this machine): checked by value above, not here."""
    status, on_disk = _profile(tmp_path, busy=True, nonblocking=False)
    assert status["ok"] and status["nonblocking"] is False
    assert "--nonblocking" not in status["command"]
    spent = status["cost"]
    assert spent["blocking"] is True and 0 < spent["paused_share"] < 1
    assert set(spent["paused_share_by_pid"]) == {str(r["pid"]) for r in status["processes"]}
    assert on_disk["oncpu_check"]["blocking"] is True
    assert 0 <= on_disk["oncpu_check"]["wait_leaf_share"] <= 1


@pytest.mark.parametrize(("verdict", "blocking", "ok", "severity"), [
    ("ok", False, True, "info"),
    ("runnable_counted", False, False, "info"),   # a busy machine: worth knowing
    ("runnable_counted", True, False, "warning"),  # blocking mode woke the threads itself
    ("idle_counted", False, False, "warning"),
    ("over_cpu", False, False, "warning"),
])
def test_the_self_check_warns_on_waiting_threads(verdict: str, blocking: bool, ok: bool,
                                                 severity: str) -> None:
    import dataclasses

    from test_rules_engine import _context

    from harness.analysis.selfcheck import sources as selfcheck
    from harness.rundir.records import ProfileStatus

    status = ProfileStatus.from_dict({"ok": True, "oncpu_check": {
        "verdict": verdict, "detail": "why", "blocking": blocking}})
    entry = selfcheck.profile_cpu(dataclasses.replace(_context(), profile=status))
    assert entry is not None
    assert (entry.check, entry.ok, entry.severity, entry.detail) == ("profile_cpu", ok, severity,
                                                                     "why")
    unknown = ProfileStatus.from_dict({"ok": True, "oncpu_check": {"verdict": "unknown"}})
    assert selfcheck.profile_cpu(dataclasses.replace(_context(), profile=unknown)) is None
