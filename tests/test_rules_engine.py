"""The rule engine (harness.analysis.rules): books, registration, run order, the thresholds
table, and rules as plain functions of what their book runs on."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from test_records import hand_summary

import harness.analysis.data.findings  # noqa: F401  (registers the data book)
import harness.analysis.diagnosis.change  # noqa: F401  (registers the change book)
import harness.analysis.diagnosis.single  # noqa: F401  (registers the single book)
from harness.analysis.diagnosis import measurement
from harness.analysis.diagnosis.facts import Facts
from harness.analysis.rules import BOOKS, LAYERS, THRESHOLDS, Finding, RuleBook, book, thresholds
from harness.analysis.selfcheck import core as selfcheck
from harness.analysis.selfcheck import sources
from harness.rundir.records import LoadgenResources, LoadReport, ProcessCPU

ROOT = Path(__file__).resolve().parent.parent


def test_adding_a_rule_is_a_function_and_its_decorator() -> None:
    scratch = RuleBook("scratch")

    @scratch.rule("slow_fetch", layer="upstream")
    def slow_fetch(f: Facts) -> Finding | None:
        """The feature fetch is slow."""
        st = f.stages.get("fetch")
        return Finding("warning", "upstream", "fetch is slow") if st and st.p99_us else None

    # the decorator returns the function: it stays a plain function, tested on its own
    assert slow_fetch(Facts(run_id="r")) is None
    rule = scratch.get("slow_fetch")
    assert (rule.book, rule.id, rule.layer, rule.doc) == (
        "scratch", "slow_fetch", "upstream", "The feature fetch is slow.")
    assert scratch.run(Facts(run_id="r")) == []


def test_a_rule_returns_a_list_one_finding_or_none() -> None:
    scratch = RuleBook("scratch")
    one = Finding("info", "model", "one")

    @scratch.rule("single", layer="model")
    def single(x: int) -> Finding:
        return one

    @scratch.rule("several", layer="model")
    def several(x: int) -> list[Finding]:
        return [one] * x

    @scratch.rule("nothing", layer="model")
    def nothing(x: int) -> None:
        return None

    assert scratch.run(2) == [one, one, one]
    assert scratch.get("nothing")(2) == [] and scratch.get("single")(0) == [one]


def test_ids_layers_and_books_are_checked() -> None:
    scratch = RuleBook("scratch")
    with pytest.raises(ValueError, match="layer must be one of"):
        scratch.rule("x", layer="gpu")
    with pytest.raises(ValueError, match="rule id must match"):
        scratch.rule("Bad Id", layer="model")
    with pytest.raises(ValueError, match="book must be one of"):
        book("nope")
    def mine(x: int) -> None:
        return None

    def theirs(x: int) -> None:
        return None

    scratch.rule("taken", layer="model")(mine)
    scratch.rule("taken", layer="model")(mine)  # the same function again (a reload): fine
    with pytest.raises(ValueError, match="rule id 'taken' is taken in book 'scratch'"):
        scratch.rule("taken", layer="model")(theirs)
    with pytest.raises(KeyError, match="no rule 'missing' in book 'scratch'"):
        scratch.get("missing")
    assert set(BOOKS) == {"self_check", "single", "change", "data"}


def test_rules_run_in_module_order_then_in_definition_order() -> None:
    scratch = RuleBook("scratch")

    def first(x: int) -> str:
        return "first"

    def second(x: int) -> str:
        return "second"

    def other(x: int) -> str:
        return "other"

    first.__module__ = second.__module__ = "rules.late"
    other.__module__ = "rules.early"
    for f in (second, other, first):  # registration order does not matter
        scratch.rule(f.__name__, layer="model")(f)
    scratch.order_modules("rules.early", "rules.late")
    assert scratch.run(0) == ["other", "first", "second"]
    scratch.order_modules("rules.late")  # modules left out run after, by name
    assert scratch.run(0) == ["first", "second", "other"]


def test_the_books_hold_the_rules_in_the_documented_order() -> None:
    ids = {name: [r.id for r in book(name).rules] for name in BOOKS}
    assert ids["self_check"] == [
        "measured_data", "run_complete", "loadgen_cpu", "achieved_rate", "late_dropped",
        "loadgen_late",
        "samples", "out_of_range", "negative_residuals", "transport_errors", "unanswered",
        "server_timing", "traces", "profiler", "profile_cpu", "cpu_contention", "metrics",
        "target_resources", "node_metrics", "run_files", "target_bounds", "workers_lost",
        "worker_clocks", "workers_cpu"]
    assert ids["single"] == [
        "loadgen_saturated", "rate_shortfall", "late_starts", "few_samples",
        "self_check_failed", "machine_contended", "cannot_localize", "machine_saturated",
        "saturation", "queueing", "service_cpu", "worker_imbalance", "memory_growth",
        "service_host", "cpu_saturation", "event_loop_blocked", "stage_share", "stage_tail",
        "unattributed",
        "model_versions", "cpu_by_stage", "own_code", "awaiting", "client_tail",
        "traffic_mix", "input_class", "failures"]
    assert ids["change"] == ["not_comparable", "growth", "no_growth", "hidden_names",
                             "model_version", "profile_functions", "series_table",
                             "cpu_growth", "awaiting_growth"]
    assert ids["data"] == ["prediction_shift", "null_features", "missing_features",
                           "feature_problems", "dataset_drift"]
    for name in BOOKS:
        for r in book(name).rules:
            assert r.doc, f"rule {name}.{r.id} has no docstring"
            assert r.layer in LAYERS


def test_every_threshold_has_its_value_unit_and_reason_once() -> None:
    assert len(THRESHOLDS) >= 50
    for name, t in THRESHOLDS.items():
        assert t.name == name and t.unit and len(t.reason) > 20, name
        assert getattr(thresholds, name) == t.value, name
    # a threshold is defined in the table only: no rule module has a number of its own
    rule_modules = ["selfcheck/core.py", "selfcheck/sources.py", "selfcheck/workers.py",
                    "diagnosis/measurement.py",
                    "diagnosis/infrastructure.py", "diagnosis/stages.py", "diagnosis/inputs.py",
                    "diagnosis/change.py", "diagnosis/measures.py", "diagnosis/deltas.py",
                    "data/findings.py", "diagnosis/processes.py", "diagnosis/cpu.py",
                    "diagnosis/tail.py", "diagnosis/eventloop.py", "diagnosis/evidence.py",
                    "diagnosis/profiled.py", "diagnosis/change_work.py"]
    for rel in rule_modules:
        tree = ast.parse((ROOT / "harness" / "analysis" / rel).read_text())
        own = [t.id for node in tree.body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()
               and isinstance(node.value, ast.Constant)
               and isinstance(node.value.value, (int, float))]
        assert not own, f"{rel} defines thresholds outside the table: {own}"


def _context(**load: object) -> selfcheck.CheckContext:
    return selfcheck.CheckContext(hand_summary(), LoadReport.from_dict(
        {"model": "open", "target_rps": 2.5, "measured": {"requests": 12}, "errors": {},
         "stopped_early": False, "source": "load.json", **load}))


def test_self_check_rules_are_pure_functions_of_their_context() -> None:
    c = _context(errors={"A|ReadTimeout": 1, "A|HTTP 503": 2})
    assert selfcheck.transport_errors(c).to_dict() == {
        "check": "transport_errors", "ok": False, "severity": "error",
        "detail": "1 of 12 requests got no HTTP response: ReadTimeout 1"}
    assert selfcheck.unanswered(c) is None  # a load.json without the count: not checked
    assert sources.run_files(c) is None
    assert sources.run_files(dataclasses.replace(c, warnings=("x", "y"))).detail == "x; y"
    assert selfcheck.achieved_rate(c).detail == \
        "achieved 2.40 req/s of 2.50 target (96.0 %; limit 95 %)"
    short = dataclasses.replace(c.summary.load, achieved_rps=2.3)
    assert selfcheck.achieved_rate(
        dataclasses.replace(c, summary=dataclasses.replace(c.summary, load=short))).is_error
    assert [e.check for e in selfcheck.samples(c)] == [
        "samples_p50", "samples_p90", "samples_p95", "samples_p99", "samples_p999"]
    entries = selfcheck.BOOK.run(c)
    assert [e.check for e in entries][:3] == ["measured_data", "run_complete", "loadgen_cpu"]


def test_one_threshold_for_the_self_check_and_the_diagnosis() -> None:
    # a load generator above 90 % of a core in just over 10 % of its samples: the
    # self-check's error and the diagnosis's critical finding come from the same number
    share = thresholds.LOADGEN_SATURATED_SHARE + 0.001
    busy = ProcessCPU(9, "loadgen", 95.0, 99.0, 99.0, share)
    summary = hand_summary()
    res = dataclasses.replace(summary.resources, loadgen=LoadgenResources(95.0, 99.0, (busy,)))
    c = dataclasses.replace(_context(), summary=dataclasses.replace(summary, resources=res))
    assert selfcheck.loadgen_cpu(c).is_error
    found = measurement.loadgen_saturated(Facts(run_id="r", loadgen_saturated_share=share,
                                                loadgen_cpu_mean_pct=95.0))
    assert found is not None and found.severity == "critical"
    at_limit = thresholds.LOADGEN_SATURATED_SHARE
    assert measurement.loadgen_saturated(Facts(run_id="r", loadgen_saturated_share=at_limit,
                                               loadgen_cpu_mean_pct=95.0)) is None
