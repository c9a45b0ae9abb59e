"""SLO files and check: parsing errors, the decision rule by value, exit codes, JUnit XML.

Run directories are written with the project's own writers (tests/synthetic_runs.py)
so ``check`` reads exactly what a real run leaves; the end-to-end test on a real
`harness run` is in tests/test_compare.py, which shares its runs.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import make_run

from harness import stats
from harness.analysis.slo import (
    SloError,
    check,
    junit_xml,
    load_slo,
    parse_latency,
    parse_percentile,
    parse_slo,
)
from harness.analysis.summary import summarize
from harness.rundir import write_json_atomic

REPO = Path(__file__).resolve().parent.parent


def slo_of(text: str, tmp_path: Path, name: str = "slo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- parsing -------------------------------------------------------------------------
def test_parse_percentile_and_latency_by_value() -> None:
    assert parse_percentile("p99") == 99.0
    assert parse_percentile("p99.9") == 99.9
    assert parse_percentile("p999") == 99.9  # summary.json's spelling
    assert parse_percentile("p50") == 50.0
    assert parse_latency("50ms") == 50_000
    assert parse_latency("1.5s") == 1_500_000
    assert parse_latency("800us") == 800
    assert parse_latency(20) == 20_000  # bare numbers are milliseconds
    for bad in ("p100", "q99", "p0"):
        with pytest.raises(ValueError, match="percentile"):
            parse_percentile(bad)
    with pytest.raises(ValueError, match="latency must be"):
        parse_latency("fast")


@pytest.mark.parametrize("text, needle", [
    ("objectives: []", "objectives must be a non-empty list"),
    ("objectives:\n  - latency: {p99: soon}", "objectives[0].latency.p99: latency must be"),
    ("objectives:\n  - latency: {x99: 5ms}", "objectives[0].latency.x99"),
    ("objectives:\n  - error_rate: 2", "objectives[0].error_rate: error rate must be in"),
    ("objectives:\n  - min_throughput: -3", "min_throughput: must be a number"),
    ("objectives:\n  - name: a\n    lantency: {p99: 5ms}", "unknown key 'lantency'"),
    ("objectives:\n  - name: a", "no bound given"),
    ("confidence: 1.5\nobjectives:\n  - latency: {p99: 5ms}", "confidence must be in"),
    ("objectives:\n  - stage: infer\n    error_rate: 1%", "apply to requests, not to stage"),
    ("objectives: [unclosed", "not valid YAML"),
])
def test_bad_slo_files_name_file_key_and_value(tmp_path: Path, text: str, needle: str) -> None:
    path = slo_of(text, tmp_path)
    with pytest.raises(SloError) as err:
        load_slo(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_example_slo_file_is_valid() -> None:
    slo = load_slo(REPO / "examples" / "slo.yaml")
    assert slo.objectives and 0.5 < slo.confidence < 1
    kinds = {k for o in slo.objectives for k, v in (("latency", o.latency_us),
                                                    ("error", o.max_error_rate),
                                                    ("throughput", o.min_throughput_rps),
                                                    ("stage", o.stage), ("tag", o.tag)) if v}
    assert kinds == {"latency", "error", "throughput", "stage", "tag"}


def test_missing_slo_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SloError, match="cannot read the SLO file"):
        load_slo(tmp_path / "nope.yaml")


# -- decisions by value ----------------------------------------------------------------
def test_zero_exceedance_sample_counts_match_the_issue() -> None:
    # With zero exceedances the largest sample is the bound: p90 needs 44 and p99 459
    # samples at 99 % confidence (0.9**44 = 0.0097 <= 0.01 < 0.9**43).
    assert stats.min_samples_for_percentile(90, 0.99) == 44
    assert stats.min_samples_for_percentile(99, 0.99) == 459


def test_pass_fail_and_inconclusive_follow_the_order_statistic_bounds(tmp_path: Path) -> None:
    # 1000 samples 1..1000 ms (uniform): p90 is 900 ms.
    values = np.arange(1, 1001) * 1000
    rd = make_run(tmp_path / "run", {("client", "predict", None): values})
    n, c = 1000, 0.95
    u = stats.quantile_upper_bound_rank(n, 90, c)
    lo, _ = stats.quantile_ci_ranks(n, 90, 2 * c - 1)
    assert u is not None and lo is not None
    upper_us, lower_us = u * 1000, lo * 1000  # rank r is r ms (bucket widths < 0.1 %)
    slo = parse_slo({"objectives": [
        {"name": "predict", "latency": {"p90": f"{upper_us * 1.002 / 1000}ms"}},  # just above U
        {"name": "predict", "latency": {"p90": f"{lower_us * 0.995 / 1000}ms"}},  # below L
        {"name": "predict", "latency": {"p90": "900ms"}},  # between: inconclusive
    ]})
    res = check(rd, slo)
    assert [r.verdict for r in res.rows] == ["pass", "fail", "inconclusive"]
    assert abs(res.rows[0].upper - upper_us) <= upper_us * 0.001 + 1
    assert abs(res.rows[1].lower - lower_us) <= lower_us * 0.001 + 1
    assert res.rows[2].lower < 900_000 < res.rows[2].upper
    assert res.verdict == "fail" and res.exit_code == 1


def test_too_few_samples_is_inconclusive_with_the_needed_count(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", {("client", "predict", None): np.full(100, 5000)})
    res = check(rd, parse_slo({"objectives": [{"latency": {"p99": "1s"}}]}))
    assert res.verdict == "inconclusive" and res.exit_code == 2
    assert "needs at least 299" in res.rows[0].detail


def test_error_rate_throughput_and_stage_rows(tmp_path: Path) -> None:
    ok = np.full(950, 2000)
    rd = make_run(tmp_path / "run", {("client", "POST predict", None): ok,
                                     ("client_failed", "POST predict", None): np.full(50, 900),
                                     ("stage", "POST predict", "infer"): np.full(950, 1500)},
                  seconds=10.0)
    slo = parse_slo({"objectives": [
        {"name": "predict", "error_rate": "10%", "min_throughput": 90},  # 5 % errors, 100/s
        {"name": "predict", "error_rate": 0.01, "min_throughput": 150},
        {"name": "predict", "error_rate": 0.05},  # exactly at the target: cannot decide
        {"stage": "infer", "latency": {"p50": "1ms"}},
    ]})
    rows = check(rd, slo).rows
    assert [(r.kind, r.verdict) for r in rows] == [
        ("error_rate", "pass"), ("throughput", "pass"), ("error_rate", "fail"),
        ("throughput", "fail"), ("error_rate", "inconclusive"), ("latency", "fail")]
    assert rows[0].measured == pytest.approx(0.05)
    assert rows[1].measured == pytest.approx(100.0)
    # Clopper-Pearson bounds for 50/1000 at 95 %, one-sided (scipy.stats.beta by hand).
    assert rows[0].upper == pytest.approx(0.0628, abs=5e-4)
    assert rows[2].lower == pytest.approx(0.0393, abs=5e-4)


def test_self_check_error_makes_the_run_invalid(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", {("client", "predict", None): np.full(500, 3000)})
    summary = summarize(rd, write=False)
    summary["self_check"].append({"check": "loadgen_cpu", "ok": False, "severity": "error",
                                  "detail": "load generator saturated"})
    write_json_atomic(rd.path / "summary.json", summary)
    slo = parse_slo({"objectives": [{"latency": {"p50": "10ms"}}]})
    res = check(rd, slo)
    assert res.verdict == "invalid" and res.exit_code == 2
    assert res.rows[0].verdict == "pass"
    forced = check(rd, slo, ignore_self_check=True)
    assert forced.verdict == "pass" and forced.self_check_ignored


def test_junit_xml_has_one_testcase_per_objective(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", {("client", "predict", None): np.full(100, 5000)})
    slo = parse_slo({"objectives": [{"latency": {"p50": "10ms", "p90": "1ms", "p99": "1s"}}]})
    root = ET.fromstring(junit_xml(check(rd, slo)))
    assert root.tag == "testsuite"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == ["all requests p50", "all requests p90",
                                              "all requests p99"]
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    assert cases[1].find("failure") is not None
    assert cases[2].find("skipped") is not None


def test_cli_exit_codes_and_junit_file(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", {("client", "predict", None): np.full(400, 5000)})
    passing = slo_of("objectives:\n  - latency: {p99: 10ms}\n", tmp_path, "pass.yaml")
    failing = slo_of("objectives:\n  - latency: {p50: 1ms}\n", tmp_path, "fail.yaml")
    unsure = slo_of("objectives:\n  - latency: {p999: 1s}\n", tmp_path, "unsure.yaml")
    broken = slo_of("objectives:\n  - latency: {p99: x}\n", tmp_path, "broken.yaml")
    harness = [sys.executable, "-m", "harness.cli", "check", str(rd.path), "--slo"]
    junit = tmp_path / "junit.xml"
    got = {}
    for path in (passing, failing, unsure, broken):
        proc = subprocess.run([*harness, str(path), "--junit", str(junit)], capture_output=True,
                              text=True, timeout=60)
        got[path.stem] = proc.returncode
        if path.stem == "broken":
            assert "Traceback" not in proc.stderr and "latency.p99" in proc.stderr
        if path.stem == "fail":
            assert "verdict: FAIL" in proc.stdout
            assert ET.parse(junit).getroot().get("failures") == "1"
    assert got == {"pass": 0, "fail": 1, "unsure": 2, "broken": 2}
