"""The pieces of distributed load that need no second host: the version rule, the clock
arithmetic, the self-checks of lost workers and workers' clocks, and the commands' input
rules (`harness worker`, `harness run --remote-workers / --master-bind`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from test_rules_engine import _context

from harness import __version__
from harness.analysis.selfcheck import workers as checks
from harness.load import handshake
from harness.run.options import master_address

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "locustfiles" / "get_loop.py"


def _hello(**over: object) -> dict[str, object]:
    return {**handshake.hello_data(False), "host": "h2", **over}


def test_a_worker_of_the_same_versions_may_join_another_is_refused_naming_both() -> None:
    assert handshake.refusal(_hello()) is None
    patch = handshake.LOCUST_MINOR + ".99"  # a Locust patch release: same messages
    assert handshake.refusal(_hello(locust=patch)) is None
    said = handshake.refusal(_hello(harness="0.0.9"))
    assert said == (f"the master runs harness {__version__} and the worker on h2 runs "
                    "harness 0.0.9: install the same harness version on every host")
    said = handshake.refusal(_hello(locust="1.4.0"))
    assert said is not None and handshake.LOCUST_VERSION in said and "Locust 1.4.0" in said


def test_the_clock_offset_is_the_masters_minus_ours_within_half_the_round_trip() -> None:
    # we sent at 10.0 (our clock), the master read 12.5 (its clock), we got it at 10.2
    s = handshake.sample_from_pong({"t0": 10.0, "t1": 12.5}, 10.2)
    assert s.offset_s == pytest.approx(2.4) and s.rtt_s == pytest.approx(0.2)
    assert s.uncertainty_s == pytest.approx(0.1)
    slow = handshake.ClockSample(offset_s=2.0, rtt_s=0.9)
    assert handshake.best_sample([slow, s]) is s and handshake.best_sample([]) is None


def _worker(i: int, **over: object) -> dict[str, object]:
    return {"index": i, "id": f"w{i}", "host": f"h{i}", "remote": True, "offset_ms": 0.1,
            "rtt_ms": 0.3, "checks": 2, "run_offset_ms": 0.02, "run_rtt_ms": 0.4,
            "requests": 100, "lost": False, **over}


def test_a_lost_worker_is_an_error_naming_it_and_what_it_reported() -> None:
    assert checks.workers_lost(_context()) is None  # not a distributed run
    fine = _context(workers=2, workers_detail=[_worker(0), _worker(1)], workers_lost=[])
    entry = checks.workers_lost(fine)
    assert entry is not None and entry.ok and entry.detail == "all 2 workers reported to the end"
    lost = {"id": "w1", "host": "h1", "why": "stopped sending heartbeats", "lost_at": 5.0,
            "after_s": 4.2, "intervals_reported": 3, "requests_reported": 61}
    entry = checks.workers_lost(_context(workers=2, workers_detail=[_worker(0), _worker(1)],
                                         workers_lost=[lost]))
    assert entry is not None and entry.is_error
    assert entry.detail.startswith(
        "1 of 2 workers lost: worker w1 on h1 lost 4.2 s into the load (stopped sending "
        "heartbeats), after 61 requests in 3 intervals.")


def test_worker_clocks_warn_when_what_is_left_could_move_requests_between_intervals() -> None:
    ok = checks.worker_clocks(_context(workers_detail=[_worker(0), _worker(1)]))
    assert ok is not None and ok.ok
    assert ok.detail == ("2 workers (2 remote); largest offset corrected 0.100 ms; the worst "
                         "clock is known within 0.220 ms (h0, 2 checks during the run)")
    # 25 ms left after the correction (the worker's clock drifted during the run): above
    # 1 % of the 1 s interval
    drifted = _context(workers_detail=[_worker(0), _worker(1, run_offset_ms=25.0)])
    warn = checks.worker_clocks(drifted)
    assert warn is not None and not warn.ok and warn.severity == "warning"
    assert "known within 25.200 ms (h1" in warn.detail and "neighbouring interval" in warn.detail
    # the same with 10 s intervals is within 1 %
    wide = checks.worker_clocks(dataclasses.replace(drifted, interval_s=10.0))
    assert wide is not None and wide.ok


@pytest.mark.parametrize("text, expected", [
    ("0.0.0.0:5557", ("0.0.0.0", 5557)), ("10.0.0.5:1", ("10.0.0.5", 1)),
    ("[::1]:5557", ("::1", 5557)), ("master.example:65535", ("master.example", 65535)),
])
def test_master_addresses(text: str, expected: tuple[str, int]) -> None:
    assert master_address(text) == expected


@pytest.mark.parametrize("text", ["5557", "host:", ":5557", "host:0", "host:70000",
                                  "host:port", "a b:5557"])
def test_bad_master_addresses_name_the_rule_and_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be ADDRESS:PORT .* \(got '"):
        master_address(text)


def _harness(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("args, said", [
    (["--master", "nowhere"], "harness worker: the master address must be ADDRESS:PORT"),
    (["--master", "127.0.0.1:5557", "--locustfile", "missing.py"],
     "harness worker: --locustfile must be an existing .py locustfile (got 'missing.py')"),
    (["--master", "127.0.0.1:5557", "--connect-timeout", "0s"],
     "harness worker: --connect-timeout must be > 0 and <= 3600 s (got '0s')"),
])
def test_harness_worker_rejects_bad_input_in_one_line(args: list[str], said: str) -> None:
    done = _harness("worker", *args)
    assert done.returncode == 2 and done.stderr.startswith(said), done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_whose_master_never_answers_says_so_and_exits_3() -> None:
    # nothing listens on the port: zmq waits, the worker gives up after its timeout
    from conftest import free_port

    done = _harness("worker", "--master", f"127.0.0.1:{free_port()}", "--connect-timeout",
                    "2s")
    assert done.returncode == 3, done.stderr
    assert "harness worker: could not start: the master at 127.0.0.1:" in done.stderr
    assert "did not answer within 2 s" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, said", [
    (["--workers", "2", "--remote-workers", "3"],
     "--remote-workers must be between 0 and --workers (2) (got 3)"),
    (["--master-bind", "0.0.0.0:5557"], "--master-bind needs --workers N"),
    (["--workers", "1", "--master-bind", "0.0.0.0"], "the master address must be ADDRESS:PORT"),
    (["--workers", "2", "--remote-workers", "1"],
     "--remote-workers needs --target URL, an address the worker hosts can reach (--serve "
     "reference listens on 127.0.0.1)"),
    (["--workers", "1", "--expect-workers-timeout", "0s"],
     "--expect-workers-timeout must be between 1 and 3600 s (got 0.0)"),
])
def test_harness_run_rejects_bad_worker_options(args: list[str], said: str) -> None:
    where = ["--serve", "reference"] if "--serve" in said else ["--target", "http://127.0.0.1:9"]
    done = _harness("run", str(SCENARIO), *where, *args)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_remote_worker_at_a_full_core_is_an_error_local_ones_are_loadgen_cpus() -> None:
    calm = _worker(0, cpu_pct=[20.0, 35.5, 30.0])
    busy = _worker(1, cpu_pct=[95.0, 97.0, 60.0, 99.0])
    entry = checks.workers_cpu(_context(workers_detail=[calm, busy]))
    assert entry is not None and entry.is_error
    assert entry.detail == ("2 remote workers, from their heartbeats; the busiest, h1 (w1), "
                            "above 90 % of a core in 75.0 % of samples (mean 87.8 %, max "
                            "99.0 %); limit 10 % of samples")
    entry = checks.workers_cpu(_context(workers_detail=[calm]))
    assert entry is not None and entry.ok
    local = _worker(0, remote=False, cpu_pct=[99.0])  # psutil's loadgen_cpu judges it
    assert checks.workers_cpu(_context(workers_detail=[local])) is None
