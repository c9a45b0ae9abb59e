"""harness capacity: the knee by value, step lengths, option checks, the search's logic on
a scripted step runner (no service), and a real sweep."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.analysis.slo import parse_slo
from harness.run import RunOptions
from harness.run.capacity import (
    CapacityOptions,
    CapacityResult,
    CapacityStep,
    find_capacity,
    format_capacity,
    knee_index,
    search,
    step_seconds,
)
from harness.run.target import ServeOptions
from harness.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
SCENARIO = REPO / "tests" / "locustfiles" / "fraud_simple.py"


def _template(tmp_path: Path, **kw: object) -> RunOptions:
    return RunOptions(scenario=SCENARIO, serve="reference", rate=1.0, collectors={"profile": None},
                      out=tmp_path, **kw)  # type: ignore[arg-type]


def test_knee_by_value() -> None:
    # Flat latency, then a hockey stick: the knee is the last point before the climb.
    xs = [10.0, 20.0, 40.0, 60.0, 80.0]
    ys = [5.0, 5.5, 6.0, 20.0, 200.0]
    assert knee_index(xs, ys) == 3
    # chord distance at x=60: (60-10)/70 - (20-5)/195 = 0.714 - 0.077, the largest
    assert knee_index([1.0, 2.0], [1.0, 2.0]) is None
    assert knee_index([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) is None
    with pytest.raises(ValueError, match="same length"):
        knee_index([1.0], [1.0, 2.0])


def test_step_seconds_give_enough_samples_for_the_slo(tmp_path: Path) -> None:
    slo = parse_slo({"objectives": [{"latency": {"p90": "1s", "p50": "1s"}}]})
    opts = CapacityOptions(template=_template(tmp_path), slo=slo, step_s=5.0)
    # p90 needs 29 samples at 95 %: 1.5 x 29 = 43.5 samples
    assert step_seconds(opts, 100.0) == 5.0
    assert step_seconds(opts, 5.0) == pytest.approx(43.5 / 5.0)
    assert step_seconds(opts, 1.0) == 15.0  # capped at 3 x step


@pytest.mark.parametrize("kw, needle", [
    ({"start_rps": 0.5, "min_rps": 1.0}, "0 < min <= start <= max"),
    ({"tolerance": 0.9}, "tolerance must be in"),
    ({"max_steps": 0}, "max_steps must be in"),
    ({"step_s": 0.0}, "step must be > 0 s"),
    ({"warmup_s": 0.5}, r"warm-up must be a whole number of intervals \(1 s\) \(got 0.5 s\)"),
])
def test_bad_options_are_refused(tmp_path: Path, kw: dict, needle: str) -> None:
    slo = parse_slo({"objectives": [{"latency": {"p50": "1s"}}]})
    with pytest.raises(ValueError, match=needle):
        CapacityOptions(template=_template(tmp_path), slo=slo, **kw)


class ScriptedSteps:
    """A step runner with no service: a rate passes when it is <= ``capacity``, except for
    the scripted outcomes of its first steps ({27.0: [False]}: 27 fails once, then passes)."""

    def __init__(self, capacity: float, script: dict[float, list[bool]] | None = None) -> None:
        self.capacity = capacity
        self.script = {rate: list(outcomes) for rate, outcomes in (script or {}).items()}

    def __call__(self, index: int, phase: str, rate: float) -> CapacityStep:
        scripted = self.script.get(rate)
        passed = scripted.pop(0) if scripted else rate <= self.capacity
        return CapacityStep(
            index=index, phase=phase, rate_rps=rate, run_dir=f"step-{index}",
            verdict="pass" if passed else "fail", achieved_rps=min(rate, self.capacity),
            p50_us=5_000 if passed else 1_500_000, p90_us=8_000 if passed else 2_000_000,
            p99_us=9_000 if passed else 2_500_000, error_rate=0.0,
            failed_rows=[] if passed else ["latency p50: fail (p50 > 1 s)"], elapsed_s=5.0)


def _scripted_search(tmp_path: Path, steps: ScriptedSteps, **kw: object) -> CapacityResult:
    slo = parse_slo({"objectives": [{"latency": {"p50": "1s"}}]})
    opts = CapacityOptions(template=_template(tmp_path), slo=slo,
                           **{"start_rps": 4.0, **kw})  # type: ignore[arg-type]
    result = CapacityResult(sweep_dir=tmp_path, capacity_rps=None, limit_rps=None,
                            converged=False, reason="")
    seen: list[CapacityStep] = []
    search(opts, steps, result, seen.append)
    assert seen == result.steps and [s.index for s in seen] == list(range(1, len(seen) + 1))
    assert len(result.steps) <= opts.max_steps
    return result


def _trace(result: CapacityResult) -> list[tuple[str, float]]:
    return [(s.phase, s.rate_rps) for s in result.steps]


COARSE_AND_BISECT = [("coarse", 4.0), ("coarse", 8.0), ("coarse", 16.0), ("coarse", 32.0),
                     ("bisect", 24.0), ("bisect", 28.0), ("bisect", 26.0), ("bisect", 27.0)]


def test_agreeing_re_tests_cost_exactly_two_confirm_steps(tmp_path: Path) -> None:
    result = _scripted_search(tmp_path, ScriptedSteps(capacity=27.5))
    # hi first, then lo, one re-test each
    assert _trace(result) == COARSE_AND_BISECT + [("confirm", 28.0), ("confirm", 27.0)]
    assert result.converged and (result.capacity_rps, result.limit_rps) == (27.0, 28.0)
    assert result.reason == ("capacity 27 req/s (fails at 28 req/s, each confirmed by 2 of 2 "
                             "steps; bracket 3.7 % <= 5 %)")


def test_a_failing_end_that_passes_on_re_test_moves_the_answer_up(tmp_path: Path) -> None:
    # The measured miss: 27 failed once, the bisection answered 26; the re-test passes 27
    # twice (2 of 3), the bracket becomes 27..28 and only 28 still needs a re-test.
    result = _scripted_search(tmp_path, ScriptedSteps(capacity=27.5, script={27.0: [False]}))
    assert _trace(result) == COARSE_AND_BISECT + [
        ("confirm", 27.0), ("confirm", 27.0), ("confirm", 28.0)]
    assert result.converged and (result.capacity_rps, result.limit_rps) == (27.0, 28.0)
    assert "confirmed by 2 of 3 and 2 of 2 steps respectively;" in result.reason


def test_a_flipped_end_far_from_the_next_failure_is_bisected_again(tmp_path: Path) -> None:
    result = _scripted_search(tmp_path, ScriptedSteps(capacity=28.5, script={28.0: [False]}))
    # 28 passed its re-tests (2 of 3): the bracket is 28..32, bisected to 28..29, where
    # only 29 needs a re-test
    assert _trace(result)[8:] == [("confirm", 28.0), ("confirm", 28.0), ("bisect", 30.0),
                                  ("bisect", 29.0), ("confirm", 29.0)]
    assert result.converged and (result.capacity_rps, result.limit_rps) == (28.0, 29.0)


def test_a_passing_end_that_fails_on_re_test_moves_the_answer_down(tmp_path: Path) -> None:
    result = _scripted_search(tmp_path, ScriptedSteps(capacity=26.5, script={27.0: [True]}))
    # 28 holds, 27 fails its re-tests (1 of 3 passed): the bracket is 26..27, where 27 is
    # confirmed already and only 26 is re-tested
    assert _trace(result) == COARSE_AND_BISECT + [
        ("confirm", 28.0), ("confirm", 27.0), ("confirm", 27.0), ("confirm", 26.0)]
    assert result.converged and (result.capacity_rps, result.limit_rps) == (26.0, 27.0)
    assert "confirmed by 2 of 2 and 2 of 3 steps respectively;" in result.reason


def test_a_flip_with_nothing_left_on_one_side_resumes_coarse_steps(tmp_path: Path) -> None:
    up = _scripted_search(tmp_path, ScriptedSteps(capacity=10.0, script={8.0: [False]}),
                          tolerance=0.5)
    # 8 was the only failure: doubling again from it, up to 16
    assert _trace(up) == [("coarse", 4.0), ("coarse", 8.0), ("bisect", 6.0), ("confirm", 8.0),
                          ("confirm", 8.0), ("coarse", 16.0), ("bisect", 12.0),
                          ("confirm", 12.0)]
    assert up.converged and (up.capacity_rps, up.limit_rps) == (8.0, 12.0)
    down = _scripted_search(tmp_path, ScriptedSteps(capacity=3.0, script={10.0: [True]}),
                            start_rps=10.0, tolerance=0.5)
    # 10 was the only pass: halving again from it
    assert _trace(down) == [("coarse", 10.0), ("coarse", 20.0), ("bisect", 15.0),
                            ("confirm", 15.0), ("confirm", 10.0), ("confirm", 10.0),
                            ("coarse", 5.0), ("coarse", 2.5), ("bisect", 3.75),
                            ("confirm", 3.75), ("confirm", 2.5)]
    assert down.converged and (down.capacity_rps, down.limit_rps) == (2.5, 3.75)


@pytest.mark.parametrize("max_steps, capacity, script, reason, bracket", [
    (2, 27.5, {}, "stopped after 2 steps without a bracket", (8.0, None)),
    (11, 28.5, {28.0: [False]}, "stopped after 11 steps before the tolerance was met",
     (28.0, 30.0)),
    (8, 27.5, {}, "stopped after 8 steps before the bracket's ends were confirmed "
                  "(28 req/s: 0 of 1 steps passed)", (27.0, 28.0)),
    (9, 27.5, {}, "stopped after 9 steps before the bracket's ends were confirmed "
                  "(27 req/s: 1 of 1 steps passed)", (27.0, 28.0)),
    # out of steps on a tie: a rate at 1 of 2 does not meet the SLO
    (9, 27.5, {27.0: [False]}, "stopped after 9 steps before the bracket's ends were "
                               "confirmed (27 req/s: 1 of 2 steps passed)", (26.0, 27.0)),
])
def test_the_step_budget_bounds_every_phase(tmp_path: Path, max_steps: int, capacity: float,
                                            script: dict[float, list[bool]], reason: str,
                                            bracket: tuple[float | None, float | None]) -> None:
    result = _scripted_search(tmp_path, ScriptedSteps(capacity, script), max_steps=max_steps)
    assert len(result.steps) == max_steps and not result.converged
    assert result.reason == reason
    assert (result.capacity_rps, result.limit_rps) == bracket


def test_the_curve_has_one_row_per_rate_with_its_re_tests(tmp_path: Path) -> None:
    result = _scripted_search(tmp_path, ScriptedSteps(capacity=26.5, script={27.0: [True]}))
    curve = result.to_dict()["curve"]
    assert len(result.to_dict()["steps"]) == 12
    assert [c["rate_rps"] for c in curve] == [4.0, 8.0, 16.0, 24.0, 26.0, 27.0, 28.0, 32.0]
    row = {c["rate_rps"]: (c["steps"], c["passes"], c["passed"]) for c in curve}
    assert row[27.0] == (3, 1, False) and row[26.0] == (2, 2, True) and row[28.0] == (2, 0, False)
    assert row[32.0] == (1, 0, False)
    # the verdict column: passes/steps for a re-tested rate, the step's verdict otherwise
    verdicts = {rate: _table_row(result, rate).split()[-1] for rate in row}
    assert verdicts == {4.0: "pass", 8.0: "pass", 16.0: "pass", 24.0: "pass", 26.0: "2/2",
                        27.0: "1/3", 28.0: "0/2", 32.0: "fail"}
    assert _table_row(result, 27.0).endswith("  fail 1/3")
    assert _table_row(result, 26.0).endswith("  pass 2/2")
    tie = _scripted_search(tmp_path, ScriptedSteps(27.5, {27.0: [False]}), max_steps=9)
    assert _table_row(tie, 27.0).endswith("  tie 1/2")


def _table_row(result: CapacityResult, rate: float) -> str:
    """The table's row of ``rate`` without its mark (``<- capacity``)."""
    line = next(line for line in format_capacity(result) if line.startswith(f"{rate:>9g} "))
    return line.removesuffix("  <- capacity")


def _replay(result: CapacityResult, opts: CapacityOptions) -> CapacityResult:
    """The search run again on the verdicts the sweep's steps got, rate by rate in their
    order: the documented algorithm's answer for those verdicts."""
    recorded: dict[float, list[CapacityStep]] = {}
    for step in result.steps:
        recorded.setdefault(step.rate_rps, []).append(step)

    def runner(index: int, phase: str, rate: float) -> CapacityStep:
        assert recorded.get(rate), f"the search asked for {rate:g} req/s, not in the sweep"
        return dataclasses.replace(recorded[rate].pop(0), index=index, phase=phase)

    again = CapacityResult(sweep_dir=result.sweep_dir, capacity_rps=None, limit_rps=None,
                           converged=False, reason="")
    search(opts, runner, again)
    return again


@pytest.mark.slow
def test_real_sweep_brackets_the_capacity_of_one_worker(tmp_path: Path) -> None:
    """One sync worker with a 30 ms CPU burn per request serves at most ~1/S requests/s;
    beyond that the queue grows without bound and p50 passes 1 s. Starting at 16 req/s
    (16, 32, then bisection and two re-tests) the sweep takes ~8 steps.

    What the search promises (README, harness capacity): its documented steps, a bracket
    computed from each rate's majority verdict, within the tolerance and with both ends
    confirmed by a majority of >= 2 steps, all within max_steps; when the budget runs out
    first, the best bracket known and "not converged". Near the knee one 4 s step can
    pass where the next fails (on a quiet machine a flip at 16-17 req/s cost 12 steps),
    so convergence within the budget is asserted when no rate's steps disagreed (the
    search then needs coarse + bisection + 2 <= 10 steps from 16 req/s at 10 %); with a
    flip, that the sweep did exactly what the algorithm does with those verdicts."""
    faults = tmp_path / "faults.yaml"
    faults.write_text("inference_cpu: {ms: 30}\n")
    slo = parse_slo({"objectives": [{"latency": {"p50": "1s"}}]})
    template = _template(tmp_path, serve_options=ServeOptions(workers=1, faults=str(faults)))
    opts = CapacityOptions(template=template, slo=slo, start_rps=16.0, tolerance=0.1,
                           max_steps=12, step_s=4.0, warmup_s=1.0, out=tmp_path / "sweeps")
    result = find_capacity(opts)
    table = "\n".join(format_capacity(result))
    # the sweep is the algorithm's: replayed on its own verdicts, the same steps and answer
    again = _replay(result, opts)
    assert _trace(again) == _trace(result), table
    assert (again.capacity_rps, again.limit_rps, again.converged, again.reason) == (
        result.capacity_rps, result.limit_rps, result.converged, result.reason), table
    outcomes: dict[float, list[bool]] = {}
    for step in result.steps:
        outcomes.setdefault(step.rate_rps, []).append(step.passed)
    flipped = sorted(rate for rate, o in outcomes.items() if len(set(o)) > 1)
    if not flipped:
        assert result.converged and len(result.steps) <= 10, table
    elif not result.converged:
        assert len(result.steps) == opts.max_steps, table
        assert result.reason.startswith(f"stopped after {opts.max_steps} steps "), table
    # the bracket: every rate below the limit passed by majority, the limit did not
    assert result.capacity_rps is not None and result.limit_rps is not None, table
    curve = {p.rate_rps: p for p in result.curve()}
    assert curve[result.capacity_rps].passed and not curve[result.limit_rps].passed, table
    assert all(p.passed for rate, p in curve.items() if rate < result.limit_rps), table
    assert result.capacity_rps == max(r for r in curve if r < result.limit_rps)
    if result.converged:
        assert result.limit_rps <= result.capacity_rps * (1 + opts.tolerance) + 1e-9, table
        assert curve[result.capacity_rps].steps >= 2 and curve[result.limit_rps].steps >= 2
    # coarse first; a confirm step re-tests a rate tested before; each step a run directory
    phases = [s.phase for s in result.steps]
    assert phases[0] == "coarse" and set(phases) <= {"coarse", "bisect", "confirm"}, table
    for i, step in enumerate(result.steps):
        rd = RunDir(step.run_dir)
        assert Path(step.run_dir).parent == result.sweep_dir
        assert rd.meta["load"]["rate"] == pytest.approx(step.rate_rps)
        # counted by intended start: never above what the step's schedule held (issue 19)
        assert step.achieved_rps is not None and step.target_rps is not None, table
        assert step.achieved_rps <= step.target_rps, table
        assert (rd.path / "summary.json").is_file()
        if step.phase == "confirm":
            assert step.rate_rps in {s.rate_rps for s in result.steps[:i]}
    saved = json.loads((result.sweep_dir / "capacity.json").read_text())
    assert saved["capacity_rps"] == result.capacity_rps and len(saved["steps"]) == len(
        result.steps)
    assert saved["converged"] == result.converged and saved["reason"] == result.reason
    assert [c["rate_rps"] for c in saved["curve"]] == sorted(curve)
    # Utilization law, both ways. Upper: one worker cannot serve more than 1 / (mean
    # service time), so at the capacity found rate x S <= 1 (1.3: S is the capacity step's
    # own mean, and a busy machine moves it between steps). Lower: this service barely
    # queues below full load (the CPU burn is nearly constant), so an SLO of p50 <= 1 s is
    # only crossed near rate x S = 1; a step that failed the SLO itself (not invalid:
    # the self-check; not inconclusive) at rate x S < 0.5 would be a search answering far
    # too low, whatever the machine's load did to S.
    def service_s(step: CapacityStep) -> float:
        app = json.loads((Path(step.run_dir) / "summary.json").read_text())["stages"]["*"]
        return next(st["mean_us"] for st in app["stages"] if st["stage"] == "app") / 1e6

    assert result.capacity_rps * service_s(curve[result.capacity_rps].latest) <= 1.3, table
    busy = {s.index: round((s.achieved_rps or 0.0) * service_s(s), 2) for s in result.steps
            if s.verdict == "fail"}
    assert all(u >= 0.5 for u in busy.values()), (busy, table)
    assert result.knee_rps in {s.rate_rps for s in result.steps} or result.knee_rps is None


# -- the command: `harness capacity` against a target whose capacity is known -------------
GATE_LIMIT = 50  # requests in any 1 s


class _RateGate(BaseHTTPRequestHandler):
    """Answers 200 while it has received at most GATE_LIMIT requests in the last second,
    and 503 while it has received more, each after 100 ms: a capacity of 50 req/s that
    does not move with the machine's load (a CPU-bound service's would). With constant
    arrivals a window holds rate x 1 s requests; a load generator that stalls for 0.3 s
    and then catches up adds at most 12 at 40 req/s, briefly."""

    protocol_version = "HTTP/1.1"
    arrivals: deque[float] = deque()
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        now = time.monotonic()
        with self.lock:
            self.arrivals.append(now)
            while self.arrivals and self.arrivals[0] <= now - 1.0:
                self.arrivals.popleft()
            over = len(self.arrivals) > GATE_LIMIT
        # Every answer, 503 too, after 100 ms: the run is invalid when the load generator's
        # own loop adds more than 10 % of the mean corrected latency (self-check
        # loadgen_late). With 503s at once and 200s in 50 ms, a busy machine's ~5 ms of loop
        # lateness made the 80 req/s step invalid instead of failing its SLO (seen once in
        # make test with a helper's runs beside it); now it takes ~10 ms on average.
        time.sleep(0.1)
        body = b'{"over": true}' if over else b'{"ok": true}'
        self.send_response(503 if over else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def gate_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RateGate)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _capacity(url: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    slo = out / "slo.yaml"
    out.mkdir(parents=True, exist_ok=True)
    slo.write_text("objectives:\n  - error_rate: 20%\n")
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "capacity", str(SCENARIO), "--target", url,
         "--slo", str(slo), "--arrival", "constant", "--step", "1s", "--warmup", "1s",
         "--tolerance", "0.5", "--out", str(out / "sweeps"), *args],
        capture_output=True, text=True, timeout=300, cwd=REPO)


def _progress(stderr: str) -> list[str]:
    return [re.sub(r" \(\d+ s\)$", "", line) for line in stderr.splitlines()
            if line.startswith("step ")]


@pytest.mark.slow
def test_capacity_command_brackets_a_known_capacity(gate_url: str, tmp_path: Path) -> None:
    """40 req/s is 80 % of the gate (every request answered), 60 and 80 are above it
    (after the 1 s warm-up every request is refused): 40 passes, 80 fails, the bisection's
    60 fails, and at a 50 % tolerance the bracket 40..60 is confirmed in two re-tests.

    One thing the machine can change: a load generator that stalls for a few hundred ms
    and then sends late makes a 1 s step "invalid" (its self-check: late starts are over
    10 % of the latency; issue 19 separates the driver's lateness from the service's).
    That happened once in ~20 runs with both cores busy and other suites running; the
    search then re-tests, and the test checks that it did what the algorithm does with
    those verdicts. Every other time the steps below are exact."""
    done = _capacity(gate_url, tmp_path, "--start-rate", "40")
    (sweep,) = (tmp_path / "sweeps").iterdir()
    saved = json.loads((sweep / "capacity.json").read_text())
    steps = saved["steps"]
    # stderr's progress lines are the steps of capacity.json; the exit code is the result's
    assert _progress(done.stderr) == [f"step {s['index']} ({s['phase']}) {s['rate_rps']:g} "
                                      f"req/s: {s['verdict']}" for s in steps]
    assert done.returncode == (0 if saved["converged"] else 3), done.stderr + done.stdout
    invalid = [s for s in steps if s["verdict"] not in ("pass", "fail")]
    assert all(any(row.startswith("self-check: ") for row in s["failed_rows"])
               for s in invalid), invalid
    if invalid:  # the search on those verdicts, as documented (see the real sweep's test)
        result = CapacityResult(sweep, saved["capacity_rps"], saved["limit_rps"],
                                saved["converged"], saved["reason"],
                                [CapacityStep(**s) for s in steps])
        slo = parse_slo({"objectives": [{"error_rate": "20%"}]})
        opts = CapacityOptions(template=_template(tmp_path), slo=slo, start_rps=40.0,
                               tolerance=0.5)
        again = _replay(result, opts)
        assert (_trace(again), again.reason) == (_trace(result), result.reason)
        return
    assert done.returncode == 0, done.stderr + done.stdout
    assert [(s["phase"], s["rate_rps"], s["verdict"]) for s in steps] == [
        ("coarse", 40.0, "pass"), ("coarse", 80.0, "fail"), ("bisect", 60.0, "fail"),
        ("confirm", 60.0, "fail"), ("confirm", 40.0, "pass")]
    assert (saved["capacity_rps"], saved["limit_rps"], saved["converged"]) == (40.0, 60.0, True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"sweep {sweep}  (5 steps, ")
    verdicts = {int(line.split()[0]): line.split("%", 1)[1].strip() for line in lines
                if re.match(r"^ +\d+ ", line)}
    assert verdicts == {40: "pass 2/2  <- capacity", 60: "fail 0/2", 80: "fail"}
    assert "           all requests error rate: fail (" in done.stdout  # why 60 and 80 failed
    assert lines[-4:] == [
        "capacity 40 req/s (fails at 60 req/s, each confirmed by 2 of 2 steps; bracket "
        "50.0 % <= 50 %)", "capacity: 40 req/s meets the SLO",
        "knee: none (fewer than 3 rates, or p99 did not rise with the achieved rate)",
        f"report: harness report {sweep}"]
    for step in steps:  # each step a run of the asked rate, under the sweep
        rd = RunDir(step["run_dir"])
        assert rd.path.parent == sweep and rd.meta["load"]["rate"] == step["rate_rps"]
        assert rd.meta["load"]["arrival"] == "constant"
        assert rd.meta["timeline"]["measure_start"] - rd.meta["timeline"]["load_start"] \
            == pytest.approx(1.0, abs=0.01)
        # a brief stall may get a few requests refused at 40 req/s; above the gate all are
        errors = step["error_rate"]
        assert errors < 0.2 if step["verdict"] == "pass" else errors > 0.9, step


@pytest.mark.slow
def test_capacity_command_exit_codes_when_it_cannot_bracket(gate_url: str,
                                                            tmp_path: Path) -> None:
    # 3: out of steps (one) before any rate failed; --json prints capacity.json
    done = _capacity(gate_url, tmp_path / "a", "--start-rate", "40", "--max-steps", "1",
                     "--json")
    assert done.returncode == 3, done.stderr
    result = json.loads(done.stdout)
    assert (result["capacity_rps"], result["limit_rps"], result["converged"]) == (40.0, None,
                                                                                 False)
    assert result["reason"] == "stopped after 1 steps without a bracket"
    sweep = Path(result["sweep_dir"])
    assert json.loads((sweep / "capacity.json").read_text()) == result
    # 1: the SLO fails at the lowest rate it may try (80, then 40 < --min-rate 60)
    done = _capacity(gate_url, tmp_path / "b", "--start-rate", "80", "--min-rate", "60")
    assert done.returncode == 1, done.stderr
    assert _progress(done.stderr) == ["step 1 (coarse) 80 req/s: fail"]
    assert ("no rate met the SLO, down to 80 req/s (min rate 60)"
            in done.stdout.splitlines()), done.stdout


@pytest.mark.parametrize("args, message", [
    (["--tolerance", "0.9"], "tolerance must be in [0.001, 0.5] (got 0.9)"),
    (["--start-rate", "0.5"], "rates must satisfy 0 < min <= start <= max"),
    (["--max-steps", "0"], "max_steps must be in [1, 100] (got 0)"),
    (["--step", "soon"], "step must be"),
    (["--slo", "/no/such/slo.yaml"], "/no/such/slo.yaml"),
])
def test_capacity_command_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str],
                                                       message: str,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    # the command's own code path, in this process (the CLI starts nothing for bad input)
    from harness.cli import main

    slo = tmp_path / "slo.yaml"
    slo.write_text("objectives:\n  - latency: {p50: 1s}\n")
    code = main(["capacity", str(SCENARIO), "--target", "http://127.0.0.1:9", "--slo",
                 str(slo), "--out", str(tmp_path / "sweeps"), *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == "" and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("harness capacity: ") and message in line, line
    assert not (tmp_path / "sweeps").exists()  # nothing was started


def test_capacity_command_target_down_is_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    slo = tmp_path / "slo.yaml"
    slo.write_text("objectives:\n  - latency: {p50: 1s}\n")
    code = main(["capacity", str(SCENARIO), "--target", "http://127.0.0.1:9", "--slo",
                 str(slo), "--out", str(tmp_path / "sweeps")])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        "harness capacity: step 1 at 10 req/s could not run: target http://127.0.0.1:9 is "
        "not reachable: Connection refused")
