"""The achieved rate (issue 19): by intended start in the open model, never above the target.

Requests are counted when they complete, so an open-model window also held the warm-up's
backlog and the tail answered in the stop's grace: ``harness capacity`` printed 26 req/s
"achieved 31.2/s". By value on the rule, on a constructed run directory, and on a real run
against a server of known latency whose backlog is ``rate x latency`` requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_rundir import RunBuilder
from test_summary import spread

from harness.analysis.summary import summarize
from harness.rundir.records.load import achieved_count

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("requests, started, scheduled, want", [
    (66, 60, 60, (60, "started")),  # the backlog and the tail answered: counted by start
    (45, 60, 61, (45, "requests")),  # fewer answered than started: the service fell behind
    (60, 60, 60, (60, "started")),
    (70, 62, 61, (61, "started")),  # a start in the instant after the end: the schedule's
    (0, 0, 0, (0, "started")),
    (120, 60, 60, (60, "started")),  # two requests per task: counted once, as the target
    (50, None, None, (50, "requests")),  # closed model
])
def test_achieved_count_by_value(requests: int, started: int | None, scheduled: int | None,
                                 want: tuple[int, str]) -> None:
    assert achieved_count(requests, started, scheduled) == want


def test_summary_counts_the_window_by_intended_start(tmp_path: Path) -> None:
    # 100/s for 5 s: 500 scheduled, 490 started; 530 requests answered in the window (the
    # warm-up's backlog and the stop's tail included): achieved 490 / 5 s, not 530 / 5 s
    b = RunBuilder(tmp_path, model="open", rate=100.0)
    b.write_meta()
    b.record("client", "A", spread([5000] * 530))
    b.record("client_uncorrected", "A", spread([5000] * 530))
    b.load(target_rps=100.0, measured={"requests": 530, "failures": 0, "achieved_rps": 106.0,
                                       "scheduled": 500, "started": 490, "late": 0,
                                       "dropped": 10, "late_threshold_us": 1000})
    s = summarize(b.path)
    assert s["requests"][-1]["rps"] == 106.0  # requests completed per second, as before
    assert (s["load"]["achieved_rps"], s["load"]["achieved_by"]) == (98.0, "started")
    assert s["load"]["achieved_rps"] <= s["load"]["target_rps"]


def _serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "tests/known_latency_server.py", "--port", "0",
                             "--print-port", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}"


def test_achieved_never_exceeds_the_schedule_in_a_real_run(tmp_path: Path) -> None:
    # 20 req/s of 300 ms requests: ~6 in flight at every instant, so the window's completions
    # hold ~6 requests of the warm-up and its starts' ~6 last answers come in the stop's
    # grace. Counted by completion, that read 22 req/s of a 20 req/s schedule.
    server, url = _serve("--latency-ms", "300")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "tests/locustfiles/plain_post.py",
             "--target", url, "--rate", "20", "--arrival", "constant", "--users", "20",
             "--duration", "3s", "--warmup", "1s", "--no-profile", "--out", str(tmp_path)],
            capture_output=True, text=True, cwd=ROOT, timeout=180)
    finally:
        server.terminate()
        server.wait(timeout=10)
    run = next(tmp_path.iterdir())
    assert (run / "load.json").is_file(), done.stderr[-2000:]
    load = json.loads((run / "load.json").read_text())
    m, target = load["measured"], load["target_rps"]
    assert m["requests"] > m["started"], m  # the backlog: what completion time counted
    assert (m["achieved"], m["achieved_by"]) == (m["started"], "started"), m
    assert m["achieved_rps"] <= target, load
    assert m["achieved_rps"] >= 0.9 * target, load  # the server kept up
    summary = json.loads((run / "summary.json").read_text())["load"]
    assert summary["achieved_by"] == "started"
    assert summary["achieved_rps"] <= summary["target_rps"], summary
    assert summary["achieved_rps"] == pytest.approx(m["achieved_rps"], abs=0.01)
