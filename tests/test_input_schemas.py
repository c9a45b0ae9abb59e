"""The input files a run reads, checked by JSON Schema (harness/run/schemas/): the stage
map and the reference service's fault file. Errors name the field, the rule and the value;
the fault schema says what the service itself accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from harness.run.collectors.schema import first_problem, load_schema
from harness.run.collectors.stagemap import DEFAULT_MAP_PATH, load_stage_map
from harness.run.faultfile import FaultFileError, load_fault_file
from harness.run.target import ServeOptions
from reference_service import faults as service_faults

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["stagemap", "faults"])
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(load_schema(name))


def test_the_bundled_stage_map_meets_its_schema() -> None:
    assert first_problem(json.loads(DEFAULT_MAP_PATH.read_text()), "stagemap") is None


@pytest.mark.parametrize(("doc", "message"), [
    ({"rules": [{"stage": "x", "file": "*"}, {"stage": "y", "file": ""}]},
     "my.json rules[1]: file must be a non-empty string (got '')"),
    ({"rules": [{"stage": "x", "file": "*"}], "wait": [{"file": "*", "fallback": 1}]},
     "my.json wait[0]: fallback must be true or false (got 1)"),
    ({"rules": [{"file": "*"}]}, "my.json rules[0]: stage must be a non-empty string (got None)"),
    ({"rules": ["*/x/*"]}, "my.json rules[0]: a rule must be a JSON object (got '*/x/*')"),
    ({}, "my.json: rules is required"),
    ([], "my.json: must be a JSON object (got list)"),
])
def test_stage_map_errors_name_where_the_rule_and_the_value(tmp_path: Path, doc: object,
                                                           message: str) -> None:
    path = tmp_path / "my.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="stage map") as info:
        load_stage_map(path)
    assert message in str(info.value)


def test_fault_schema_matches_what_the_service_accepts() -> None:
    schema = load_schema("faults")
    kinds = schema["properties"]
    assert set(kinds) == set(service_faults.FAULT_FIELDS)
    for kind, fields in service_faults.FAULT_FIELDS.items():
        assert set(kinds[kind]["properties"]) == set(fields) | {"models", "probability"}, kind
        assert set(kinds[kind]["required"]) == set(service_faults.REQUIRED[kind]), kind
    assert schema["$defs"]["dist"]["enum"] == list(service_faults.DISTRIBUTIONS)
    assert schema["$defs"]["ms"]["maximum"] == service_faults.MAX_MS


@pytest.mark.parametrize(("text", "message"), [
    ("store_latency: {ms: -1}",
     "store_latency.ms must be a number of ms between 0 and 60000 (got -1)"),
    ("store_latency: {ms: 5, distribution: weird}",
     "store_latency.distribution must be one of ['fixed', 'uniform', 'exponential', "
     "'lognormal'] (got 'weird')"),
    ("store_errors: {}", "store_errors.rate is required"),
    ("store_errors: {rate: 1.5}", "store_errors.rate must be a number between 0 and 1 (got 1.5)"),
    ("serialize_slow: {ms: 5, speed: 2}", "serialize_slow has no setting ['speed']; allowed:"),
    ("slow_everything: {ms: 5}", "unknown fault kind ['slow_everything']; known: "),
    ("feature_null: {features: []}",
     "feature_null.features must be a non-empty list of names (got [])"),
    ("inference_cpu: {ms: 5, models: [fraud, 3]}",
     "inference_cpu.models[1] must be a non-empty string (got 3)"),
    # a rule between fields: the service's own check, after the schema's
    ("store_latency: {ms: 20, distribution: uniform, ms_max: 10}",
     "store_latency.ms_max must be >= ms for a uniform distribution (got 10.0)"),
    ("- store_latency", "must be a mapping of fault kind to settings (got list)"),
    ("store_latency: {ms: [", "is not valid YAML"),
])
def test_bad_fault_files_name_the_field_the_rule_and_the_value(tmp_path: Path, text: str,
                                                              message: str) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text + "\n")
    with pytest.raises(FaultFileError) as info:
        ServeOptions(faults=str(path))
    assert message in str(info.value)
    assert "faults.yaml" in str(info.value)


def test_a_good_fault_file_reads_as_the_service_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("store_latency: {ms: 30, probability: 0.2}\n"
                    "feature_rename: {renames: {country: country_code}, models: [fraud]}\n")
    assert load_fault_file(path) == service_faults.load_file(path)
    assert ServeOptions(faults=str(path)).fault_config() == service_faults.load_file(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_fault_file(empty) == {}


def test_oversized_input_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "faults.yaml"
    big.write_text("# " + "x" * 1_000_001 + "\n")
    with pytest.raises(FaultFileError, match=r"must be at most 1000000 bytes \(got 1000004\)"):
        load_fault_file(big)


def test_harness_run_refuses_a_bad_fault_file_before_creating_anything(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("store_latency: {ms: -1}\n")
    out = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run",
                          str(ROOT / "tests" / "locustfiles" / "fraud_simple.py"),
                          "--serve", "reference", "--faults", str(faults), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert "store_latency.ms must be a number of ms between 0 and 60000 (got -1)" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()
