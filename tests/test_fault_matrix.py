"""The localization fault matrix (benchmarks/fault_matrix.py) on its cheapest faults.

One clean run of the production scenario and one run per fault, each through
`harness run --target` on one real gunicorn reference service whose faults are switched
through its admin endpoint (Locust driver, psutil, py-spy attach to it), then
`diagnose(fault, baseline=clean)`: the primary finding must name the injected cause.
The faults are the two whose signal stays far above a shared machine's noise: a fixed
20 ms in the feature store (fetch waits; the p95 grows by the 20 ms whatever the CPU
does) and 10 % store errors (a failure rate, not a latency). The full matrix, with
repeats: `python benchmarks/fault_matrix.py` (results in BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from harness.analysis.diagnosis.facts import Finding

ROOT = Path(__file__).resolve().parent.parent


def _load_matrix():
    spec = importlib.util.spec_from_file_location("fault_matrix",
                                                  ROOT / "benchmarks" / "fault_matrix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_matrix"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fm = _load_matrix()


def test_cause_of_reads_layer_stage_and_title():
    assert fm.cause_of(None) == "nothing"
    assert fm.cause_of(Finding("warning", "change", "t", data={"stage": "stage:fetch"})) \
        == "upstream"
    assert fm.cause_of(Finding("warning", "change", "t", data={"stage": "residual"})) \
        == "queueing"
    assert fm.cause_of(Finding("info", "change", "t", data={"stage": None})) == "shift"
    assert fm.cause_of(Finding("critical", "infrastructure", "the service is saturated: too "
                               "few workers for the load, requests queue")) == "queueing"
    assert fm.cause_of(Finding("critical", "infrastructure", "9.3 % of requests failed")) \
        == "errors"
    assert fm.cause_of(Finding("warning", "measurement", "the machine is CPU-saturated and "
                               "other processes take 71.3 % of it")) == "machine"
    assert fm.cause_of(Finding("warning", "measurement", "too few samples for p99: 150")) \
        == "measurement"


@pytest.mark.slow
def test_cheapest_faults_are_localized(tmp_path: Path, reference_service) -> None:
    # one service, faults switched through its admin endpoint between the runs
    svc = reference_service(admin_token="fault-matrix-test")
    shared = fm.SharedService(svc.url, "fault-matrix-test")
    cases = [fm.CASES["store_fixed"], fm.CASES["store_errors"]]
    outcomes = fm.run_round(cases, tmp_path, 0, rate=20.0, duration=5.0, warmup=1.0,
                            shared=shared)
    assert [o.case for o in outcomes] == ["store_fixed", "store_errors"]
    wrong = [(o.case, o.answer, o.primary) for o in outcomes if not o.correct]
    assert wrong == []
    table = fm.format_matrix(outcomes)
    assert table[2].startswith("| store_fixed | upstream | upstream | 1/1 |")
