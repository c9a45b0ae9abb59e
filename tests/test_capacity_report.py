"""The report of a capacity sweep (``harness report SWEEP_DIR``): capacity.json's record by
value and against hostile files, the page of a scripted sweep, and a real sweep's report
in headless Chromium (curve drawn, no console error, no network, step links that open the
steps' reports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_capacity import ScriptedSteps, _scripted_search, _template

from harness.analysis.slo import parse_slo
from harness.report import build_sweep_report, is_sweep_dir, read_sweep
from harness.report.sweep_figs import CURVE_PERCENTILES, curve_figure
from harness.run.capacity import (
    CapacityOptions,
    CapacityResult,
    CapacityStep,
    StepObjective,
    find_capacity,
    format_capacity,
)
from harness.run.capacity.settings import slo_document, sweep_settings
from harness.run.target import ServeOptions
from harness.rundir import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]
sys.path.insert(0, str(Path(__file__).parent))
from browser import Browser  # noqa: E402

SLO = {"objectives": [{"latency": {"p50": "1s"}}, {"stage": "infer", "latency": {"p99": "40ms"}}]}


def _with_objectives(step: CapacityStep) -> CapacityStep:
    """A scripted step judged on p50 <= 1 s of all requests and p99 <= 40 ms of infer."""
    p50, infer = step.p50_us or 0, 30_000.0 if step.passed else 45_000.0
    return CapacityStep(**{**step.__dict__, "target_rps": step.rate_rps,
                           "achieved_rps": min(step.rate_rps, 27.5), "achieved_by": "started",
                           "objectives": (
                               StepObjective("all requests p50", "latency", 1e6, p50, p50,
                                             step.verdict),
                               StepObjective("all requests stage infer p99", "latency", 40e3,
                                             infer, infer, step.verdict))})


def _scripted_sweep(tmp_path: Path) -> CapacityResult:
    result = _scripted_search(tmp_path, ScriptedSteps(capacity=26.5, script={27.0: [True]}))
    result.steps = [_with_objectives(s) for s in result.steps]
    result.knee_rps = 26.0
    opts = CapacityOptions(template=_template(tmp_path), slo=parse_slo(SLO, "slo.yaml"))
    result.settings = sweep_settings(opts)
    write_json_atomic(tmp_path / "capacity.json", result.to_dict())
    return result


def test_capacity_json_reads_back_as_written(tmp_path: Path) -> None:
    result = _scripted_sweep(tmp_path)
    back = read_sweep(tmp_path)
    assert back.steps == result.steps and back.to_dict() == result.to_dict()
    assert parse_slo(back.settings["slo"]) == parse_slo(SLO)  # the SLO, as a document
    assert slo_document(parse_slo(SLO))["objectives"][1] == {
        "name": "*", "metric": "stage", "stage": "infer", "latency": {"p99": "40000us"}}
    # the steps are found where the sweep is now, by name only
    step = back.steps[0]
    assert back.step_dir(step) == tmp_path / "step-1"
    moved = CapacityResult.from_dict(result.to_dict(), tmp_path / "elsewhere")
    assert moved.step_dir(step) == tmp_path / "elsewhere" / "step-1"


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(steps="x"), "steps must be a list"),
    (lambda d: d["steps"][0].update(rate_rps=-3), "steps[0].rate_rps must be a rate > 0"),
    (lambda d: d["steps"][1].update(p50_us="fast"), "steps[1].p50_us must be an integer"),
    (lambda d: d["steps"][2].pop("verdict"), "has no 'verdict'"),
    (lambda d: d.update(capacity_rps=float("inf")), "capacity_rps must be a finite number"),
    (lambda d: d["steps"][0].update(objectives=[{"objective": "x"}]), "objectives[0] has no"),
])
def test_a_hostile_capacity_json_is_refused_by_name(tmp_path: Path, mutate, needle: str
                                                    ) -> None:
    doc = _scripted_sweep(tmp_path).to_dict()
    mutate(doc)
    (tmp_path / "capacity.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        read_sweep(tmp_path)
    done = subprocess.run([*HARNESS, "report", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("harness report:"), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_step_path_cannot_leave_the_sweep(tmp_path: Path) -> None:
    doc = _scripted_sweep(tmp_path).to_dict()
    doc["steps"][0]["run_dir"] = "/etc/../../etc"
    back = CapacityResult.from_dict(doc, tmp_path)
    assert back.step_dir(back.steps[0]) == tmp_path / "etc"
    doc["steps"][0]["run_dir"] = "/a/.."
    with pytest.raises(ValueError, match="run_dir has no directory name"):
        CapacityResult.from_dict(doc, tmp_path).step_dir(back.steps[0].__class__(
            **{**back.steps[0].__dict__, "run_dir": "/a/.."}))


def test_hostile_settings_are_shown_not_trusted(tmp_path: Path) -> None:
    doc = _scripted_sweep(tmp_path).to_dict()
    doc["settings"].update(tolerance="x", scenario="<script>alert(1)</script>",
                           slo={"objectives": [{"latency": {"p50": "fast"}}]})
    (tmp_path / "capacity.json").write_text(json.dumps(doc))
    page = build_sweep_report(tmp_path, step_reports=False).read_text(encoding="utf-8")
    assert "tolerance ? |" in page and "<script>alert(1)" not in page
    assert "The SLO recorded in capacity.json is not valid: capacity.json: settings.slo: " \
           "objectives[0].latency.p50" in page


def test_the_table_marks_the_capacity_and_reads_the_knee(tmp_path: Path) -> None:
    result = _scripted_sweep(tmp_path)
    lines = format_capacity(result)
    marked = [ln for ln in lines if ln.endswith("<- capacity")]
    assert len(marked) == 1 and marked[0].startswith(f"{26.0:>9g} ")
    assert not any("<- knee" in ln for ln in lines)
    assert lines[-2] == "capacity: 26 req/s meets the SLO"
    assert lines[-1] == ("knee: 26 req/s (Kneedle on p99 vs achieved rate), at the capacity")
    result.knee_rps = 24.0
    assert format_capacity(result)[-1].endswith(
        "below the capacity: from 24 to 26 req/s p99 climbs faster than the rate (queueing) "
        "while the SLO still holds")
    result.knee_rps = 28.0
    assert format_capacity(result)[-1].endswith("above the capacity: the SLO binds before "
                                                "p99 turns up")
    assert any(ln.startswith("scheduled/s: the intended starts") for ln in lines)
    header = lines[2].split()
    assert header[:3] == ["rate/s", "scheduled/s", "achieved/s"]


def test_the_page_of_a_scripted_sweep(tmp_path: Path) -> None:
    _scripted_sweep(tmp_path)
    assert is_sweep_dir(tmp_path)
    path = build_sweep_report(tmp_path, step_reports=False)
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "report.html"
    for title in ("Answer", "Latency-throughput curve", "Rates (each rate", "Steps, in the "
                  "order", "Achieved against asked"):
        assert f"<h2>{title}" in page, title
    assert "<b>Capacity: 26 req/s</b> meets the SLO; 27 req/s does not." in page
    assert page.count("run directory missing") == 12  # scripted steps have no run
    assert 'id="plot-curve"' in page and 'id="plot-achieved"' in page
    assert page.count("Plotly.newPlot") == 2
    # a step with a report: linked relative to where the sweep's report is written
    (tmp_path / "step-1").mkdir()
    (tmp_path / "step-1" / "report.html").write_text("<html></html>")
    (tmp_path / "elsewhere").mkdir()
    other = build_sweep_report(tmp_path, out=tmp_path / "elsewhere" / "r.html",
                               step_reports=False).read_text(encoding="utf-8")
    assert '<a href="../step-1/report.html">report</a>' in other
    assert other.count("run directory missing") == 11


def test_the_curve_by_value(tmp_path: Path) -> None:
    fig = curve_figure(_scripted_sweep(tmp_path))
    assert fig is not None
    traces = {(t.name, t.mode): t for t in fig.data}
    # one point per rate, at its achieved rate (scripted: min(rate, 27.5)), joined up to the
    # lowest rate that did not pass (27), the rates beyond it as points
    assert list(traces["p50", "lines+markers"].x) == [4.0, 8.0, 16.0, 24.0, 26.0, 27.0]
    assert list(traces["p50", "markers"].x) == [27.5, 27.5]
    assert list(traces["p50", "lines+markers"].y)[:2] == [5.0, 5.0]
    assert traces["p99", "markers"].y[-1] == 2500.0
    traces = {t.name: t for t in fig.data}
    # the SLO's bounds: p50 is a line of the curve; infer p99 is drawn with its own values
    bounds = sorted((s.y0, s.line.color) for s in fig.layout.shapes)
    assert bounds == [(40.0, "#d62728"), (1000.0, CURVE_PERCENTILES[0][2])]
    assert list(traces["all requests stage infer p99"].y) == [30.0] * 5 + [45.0] * 3
    # a ring per rate on the p50 line, coloured by its majority verdict
    assert list(traces["verdict: pass"].x) == [4.0, 8.0, 16.0, 24.0, 26.0]
    assert list(traces["verdict: fail"].y) == [1500.0] * 3
    notes = {a.text: (a.x, a.y) for a in fig.layout.annotations if "req/s" in a.text}
    assert notes == {"capacity 26 req/s": (26.0, 5.0), "knee (p99) 26 req/s": (26.0, 9.0)}


# -- a real sweep -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> CapacityResult:
    """A short real sweep: one worker burning 30 ms per request (~30 req/s at most) from
    8 req/s, tolerance 50 %: a few steps of 2 s after 1 s of warm-up, enough for a curve."""
    tmp = tmp_path_factory.mktemp("sweep")
    faults = tmp / "faults.yaml"
    faults.write_text("inference_cpu: {ms: 30}\n")
    template = _template(tmp, serve_options=ServeOptions(workers=1, faults=str(faults)))
    opts = CapacityOptions(template=template, slo=parse_slo({"objectives": [
        {"latency": {"p50": "1s"}}]}), start_rps=8.0, tolerance=0.5, max_steps=5,
        step_s=2.0, warmup_s=1.0, out=tmp / "sweeps")
    return find_capacity(opts)


@pytest.mark.slow
def test_a_real_sweep_s_report_in_headless_chromium(sweep: CapacityResult,
                                                    tmp_path: Path) -> None:
    # each step its own arrival draw: a re-test is not a replay of its first step
    assert [s.seed for s in sweep.steps] == list(range(1, len(sweep.steps) + 1))
    for step in sweep.steps:
        assert step.target_rps and step.achieved_rps is not None, step
        assert step.achieved_rps <= step.target_rps, step  # by intended start (issue 19)
        assert Path(step.run_dir).parent == sweep.sweep_dir
    done = subprocess.run([*HARNESS, "report", str(sweep.sweep_dir)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path == sweep.sweep_dir / "report.html"
    for step in sweep.steps:
        assert (Path(step.run_dir) / "report.html").is_file()
    with Browser() as browser:
        browser.open(path)
        drawn = browser.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
            "d => d.querySelector('.main-svg') && d._fullData && d._fullData.length > 0"
            ").length")
        assert drawn == 2
        points = browser.evaluate("document.getElementById('plot-curve')._fullData"
                                  ".filter(t => t.name === 'p99')"
                                  ".reduce((n, t) => n + t.x.length, 0)")
        assert points == len(sweep.curve())
        assert browser.console_errors() == [] and browser.remote_requests() == []
        shot = browser.screenshot(tmp_path / "sweep-report.png")
        assert shot.stat().st_size > 50_000
        links = browser.evaluate("Array.from(document.querySelectorAll('#steps a'))"
                                 ".map(a => a.href)")
        assert len(links) == len(sweep.steps)
        browser.open(Path(links[0].removeprefix("file://")))
        assert browser.evaluate("document.title").startswith("Run ")
        assert browser.console_errors() == []
