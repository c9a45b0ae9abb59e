"""harness capacity: the knee by value, step lengths, option checks, and a real sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.capacity import (
    CapacityOptions,
    find_capacity,
    format_capacity,
    knee_index,
    step_seconds,
)
from harness.run import RunOptions
from harness.rundir import RunDir
from harness.service import ServeOptions
from harness.slo import parse_slo

REPO = Path(__file__).resolve().parent.parent
SCENARIO = REPO / "tests" / "locustfiles" / "fraud_simple.py"


def _template(tmp_path: Path, **kw: object) -> RunOptions:
    return RunOptions(scenario=SCENARIO, serve="reference", rate=1.0, profile=False,
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
])
def test_bad_options_are_refused(tmp_path: Path, kw: dict, needle: str) -> None:
    slo = parse_slo({"objectives": [{"latency": {"p50": "1s"}}]})
    with pytest.raises(ValueError, match=needle):
        CapacityOptions(template=_template(tmp_path), slo=slo, **kw)


@pytest.mark.slow
def test_real_sweep_brackets_the_capacity_of_one_worker(tmp_path: Path) -> None:
    """One sync worker with a 30 ms CPU burn per request serves at most ~1/S requests/s;
    beyond that the queue grows without bound and p50 passes 1 s. The sweep must bracket
    that rate within its tolerance, each step a run directory."""
    faults = tmp_path / "faults.yaml"
    faults.write_text("inference_cpu: {ms: 30}\n")
    slo = parse_slo({"objectives": [{"latency": {"p50": "1s"}}]})
    template = _template(tmp_path, serve_options=ServeOptions(workers=1, faults=str(faults)))
    opts = CapacityOptions(template=template, slo=slo, start_rps=4.0, tolerance=0.1,
                           max_steps=10, step_s=4.0, warmup_s=1.0, out=tmp_path / "sweeps")
    result = find_capacity(opts)
    table = "\n".join(format_capacity(result))
    assert result.converged, table
    assert result.capacity_rps is not None and result.limit_rps is not None
    assert result.capacity_rps < result.limit_rps <= result.capacity_rps * 1.1 + 1e-9
    phases = [s.phase for s in result.steps]
    assert phases == sorted(phases, key=lambda p: p != "coarse")  # coarse first, then bisect
    for step in result.steps:
        rd = RunDir(step.run_dir)
        assert Path(step.run_dir).parent == result.sweep_dir
        assert rd.meta["load"]["rate"] == pytest.approx(step.rate_rps)
        assert (rd.path / "summary.json").is_file()
        assert step.passed == (step.rate_rps <= result.capacity_rps)
    saved = json.loads((result.sweep_dir / "capacity.json").read_text())
    assert saved["capacity_rps"] == result.capacity_rps and len(saved["steps"]) == len(
        result.steps)
    # Utilization law: one worker cannot serve more than 1 / (mean service time).
    best = max((s for s in result.steps if s.passed), key=lambda s: s.rate_rps)
    app = json.loads((Path(best.run_dir) / "summary.json").read_text())["stages"]["*"]
    service_s = next(st["mean_us"] for st in app["stages"] if st["stage"] == "app") / 1e6
    assert result.capacity_rps * service_s <= 1.3, table
    assert result.knee_rps in {s.rate_rps for s in result.steps} or result.knee_rps is None
