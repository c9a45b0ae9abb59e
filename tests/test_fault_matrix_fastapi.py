"""The fault matrix on the FastAPI example (benchmarks/fault_matrix_fastapi.py): its judge
on constructed findings, and its cheapest cases for real.

The service sends no Server-Timing; the runs are `harness run --target` on a real
uvicorn + Redis service with a profile (on-CPU and wall) and psutil (mode a). The cheap
cases are the A/A pair (no finding above info outside the measurement layer) and the
blocking call in the async handler (a 30 ms time.sleep: the event loop blocked is the
answer), whose signal stays far above a shared machine's noise. The full matrix, with
traces and without a profile, in rounds: BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.diagnosis.engine import Diagnosis
from harness.analysis.diagnosis.facts import Finding

ROOT = Path(__file__).resolve().parent.parent


def _load_matrix():
    spec = importlib.util.spec_from_file_location(
        "fault_matrix_fastapi", ROOT / "benchmarks" / "fault_matrix_fastapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_matrix_fastapi"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fm = _load_matrix()


def _f(severity: str, layer: str, title: str = "t", **data: object) -> Finding:
    return Finding(severity, layer, title, data=dict(data))


def test_cause_of_reads_the_rule_the_stage_and_the_layer():
    assert fm.cause_of(None) == "nothing"
    assert fm.cause_of(_f("critical", "infrastructure", rule="event_loop_blocked")) \
        == "event loop"
    assert fm.cause_of(_f("warning", "infrastructure", rule="cpu_saturation")) == "queueing"
    assert fm.cause_of(_f("warning", "change", stage="profile:infer")) == "model"
    assert fm.cause_of(_f("warning", "change", stage="stage:fetch")) == "upstream"
    assert fm.cause_of(_f("warning", "change", stage=None, via="cpu")) == "cpu"
    assert fm.cause_of(_f("info", "change", stage=None, via="awaiting")) == "waiting"
    assert fm.cause_of(_f("warning", "infrastructure", rule="client_tail", cause="unknown")) \
        == "tail"
    assert fm.cause_of(_f("critical", "infrastructure", "9 % of requests failed",
                          saturated=True)) == "queueing"
    assert fm.cause_of(_f("warning", "input data", rule="null_features")) == "input data"


def test_the_judge_in_each_mode():
    blocking, aa = fm.CASES["blocking_call"], fm.CASES["clean_aa"]
    right = Diagnosis("r", "b", [_f("critical", "infrastructure", rule="event_loop_blocked")])
    shift = Diagnosis("r", "b", [_f("info", "change", stage=None)])
    wrong = Diagnosis("r", "b", [_f("warning", "upstream", rule="stage_share")])
    assert fm.judge(blocking, "a", right) == ("event loop", True)
    assert fm.judge(blocking, "a", shift) == ("shift", False)  # (a) must localize
    assert fm.judge(blocking, "c", shift) == ("shift", True)  # (c) must not mislocalize
    assert fm.judge(blocking, "c", wrong) == ("upstream", False)
    assert fm.judge(aa, "b", shift) == ("no alarm", True)
    assert fm.judge(aa, "b", wrong) == ("warning: upstream", False)


@pytest.fixture(scope="module")
def fastsvc_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = ROOT / "artifacts" / "fastapi_service"
    if (repo / "manifest.json").is_file():
        return repo
    out = tmp_path_factory.mktemp("fastsvc-artifacts")  # the locustfile's 20,000 restaurants
    subprocess.run([sys.executable, "-m", "examples.fastapi_service.train", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.slow
def test_cheapest_cases_are_judged_right(tmp_path: Path, fastsvc_artifacts: Path) -> None:
    outcomes = fm.run_round([fm.CASES[n] for n in fm.CHEAP], ["a"], tmp_path, 0, rate=40.0,
                            duration=5.0, warmup=1.0, artifacts=fastsvc_artifacts)
    wrong = [(o.case, o.answer, o.primary) for o in outcomes if not o.correct]
    assert not wrong, wrong
    assert [o.answer for o in outcomes] == ["no alarm", "event loop"]
