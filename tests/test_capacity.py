"""harness capacity: the knee by value, step lengths, option checks, the search's logic on
a scripted step runner (no service), and a real sweep."""

from __future__ import annotations

import json
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


@pytest.mark.slow
def test_real_sweep_brackets_the_capacity_of_one_worker(tmp_path: Path) -> None:
    """One sync worker with a 30 ms CPU burn per request serves at most ~1/S requests/s;
    beyond that the queue grows without bound and p50 passes 1 s. The sweep must bracket
    that rate within its tolerance and confirm both ends, each step a run directory.
    Starting at 16 req/s (16, 32, then bisection and two re-tests) keeps it to ~7 steps."""
    faults = tmp_path / "faults.yaml"
    faults.write_text("inference_cpu: {ms: 30}\n")
    slo = parse_slo({"objectives": [{"latency": {"p50": "1s"}}]})
    template = _template(tmp_path, serve_options=ServeOptions(workers=1, faults=str(faults)))
    opts = CapacityOptions(template=template, slo=slo, start_rps=16.0, tolerance=0.1,
                           max_steps=12, step_s=4.0, warmup_s=1.0, out=tmp_path / "sweeps")
    result = find_capacity(opts)
    table = "\n".join(format_capacity(result))
    assert result.converged, table
    assert result.capacity_rps is not None and result.limit_rps is not None
    assert result.capacity_rps < result.limit_rps <= result.capacity_rps * 1.1 + 1e-9
    # coarse first, then bisection and confirmation (again after an end flipped); the
    # confirm steps re-test rates tested before, and the last step is one
    phases = [s.phase for s in result.steps]
    assert phases[0] == "coarse" and phases[-1] == "confirm", table
    assert set(phases) <= {"coarse", "bisect", "confirm"}
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
    # one step may disagree with the answer near the knee; each rate's majority may not
    curve = {p.rate_rps: p for p in result.curve()}
    for point in curve.values():
        assert point.passed == (point.rate_rps <= result.capacity_rps), table
    assert curve[result.capacity_rps].steps >= 2 and curve[result.limit_rps].steps >= 2
    saved = json.loads((result.sweep_dir / "capacity.json").read_text())
    assert saved["capacity_rps"] == result.capacity_rps and len(saved["steps"]) == len(
        result.steps)
    assert [c["rate_rps"] for c in saved["curve"]] == sorted(curve)
    # Utilization law: one worker cannot serve more than 1 / (mean service time).
    best = curve[result.capacity_rps].latest
    app = json.loads((Path(best.run_dir) / "summary.json").read_text())["stages"]["*"]
    service_s = next(st["mean_us"] for st in app["stages"] if st["stage"] == "app") / 1e6
    assert result.capacity_rps * service_s <= 1.3, table
    assert result.knee_rps in {s.rate_rps for s in result.steps} or result.knee_rps is None
