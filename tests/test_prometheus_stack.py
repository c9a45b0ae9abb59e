"""The local stack: Debian's Prometheus scrapes the reference service during a harness run;
its view of the stage histogram must match what the harness counted. The configuration the
stack writes, and its failures to start, are checked without the binary (they always run);
only the end-to-end test needs Debian's prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.exports.stack import PrometheusStack, prometheus_config
from harness.rundir import RunDir
from harness.rundir.scrapes import histogram_delta, read_scrape

ROOT = Path(__file__).resolve().parent.parent
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="prometheus missing: make system-deps")


def test_config_is_checked() -> None:
    assert prometheus_config("127.0.0.1:8000", 1.5, ["r.yml"]) == {
        "global": {"scrape_interval": "1500ms", "evaluation_interval": "1500ms"},
        "rule_files": ["r.yml"],
        "scrape_configs": [{"job_name": "refsvc", "metrics_path": "/metrics",
                            "static_configs": [{"targets": ["127.0.0.1:8000"]}]}]}
    assert prometheus_config("localhost:9", 0.1)["rule_files"] == []
    assert prometheus_config("localhost:9", 300)["global"]["scrape_interval"] == "300000ms"
    for target in ("http://127.0.0.1:8000/metrics", "127.0.0.1", "host/x:1"):
        with pytest.raises(ValueError, match=f"target must be host:port \\(got '{target}'\\)"):
            prometheus_config(target)
    for interval in (0.0, 0.09, 301):
        with pytest.raises(ValueError, match=rf"scrape_interval_s must be in \[0.1, 300\] "
                                             rf"\(got {interval}\)"):
            prometheus_config("127.0.0.1:8000", interval)


def test_the_stack_writes_its_config_and_rules_and_says_why_it_did_not_start(
        tmp_path: Path) -> None:
    from harness.analysis.slo import load_slo
    from harness.exports.prometheus_rules import render_rules
    from harness.exports.stack import StackError

    with pytest.raises(StackError, match="'no-such-prometheus' is not on PATH"):
        PrometheusStack("127.0.0.1:8000", binary="no-such-prometheus", work_dir=tmp_path)
    # `true` stands in for the binary: the files are written before anything starts
    slo = ROOT / "examples" / "slo.yaml"
    stack = PrometheusStack("127.0.0.1:8000", slo=slo, scrape_interval_s=2.0, port=1,
                            work_dir=tmp_path / "prom", binary="true")
    assert stack.url == "http://127.0.0.1:1" and stack.config_path.parent == tmp_path / "prom"
    rules = tmp_path / "prom" / "slo-rules.yml"
    assert rules.read_text() == render_rules(load_slo(slo))
    assert yaml.safe_load(stack.config_path.read_text()) == prometheus_config(
        "127.0.0.1:8000", 2.0, [str(rules)])
    with pytest.raises(StackError, match="prometheus exited with code 0"):
        stack.start(timeout_s=10)
    stack.stop()
    assert rules.is_file()  # a work directory the caller gave is not removed
    own = PrometheusStack("127.0.0.1:8000", binary="true")
    assert own.work_dir.is_dir() and not own.work_dir.is_relative_to(tmp_path)
    own.stop()
    assert not own.work_dir.exists()  # its own temporary directory is


def _infer_count(stack: PrometheusStack) -> float | None:
    res = stack.query('sum(refsvc_stage_duration_seconds_count{job="refsvc",stage="infer"})')
    return float(res[0]["value"][1]) if res else None


@pytest.mark.slow
@needs_prometheus
def test_prometheus_sees_what_the_harness_counted(reference_service, tmp_path: Path) -> None:
    svc = reference_service()
    target = svc.url.removeprefix("http://")
    with PrometheusStack(target, slo=ROOT / "examples" / "slo.yaml",
                         work_dir=tmp_path / "prom") as stack:
        res = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "scenarios/production.py",
             "--target", svc.url, "--rate", "20", "--duration", "5s", "--warmup", "1s",
             "--no-profile", "--out", str(tmp_path / "runs")],
            capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.returncode in (0, 1, 3), res.stderr[-2000:]
        run_path = next((tmp_path / "runs").iterdir())
        end = read_scrape(run_path, "end")
        assert end is not None, json.loads((run_path / "run.json").read_text())["collectors"]
        # Absolute counters since the service started (the harness made every request).
        end_infer = sum(per for _labels, (_les, counts) in histogram_delta(
            None, end, "refsvc_stage_duration_seconds").items()
            if dict(_labels)["stage"] == "infer" for per in counts)
        deadline = time.monotonic() + 15
        seen = None
        while time.monotonic() < deadline:
            seen = _infer_count(stack)
            if seen is not None and seen >= end_infer:
                break
            time.sleep(0.5)
        assert seen == end_infer, (seen, end_infer)
        # The rules were loaded; none that has been evaluated yet failed (the recording
        # group runs every 30 s, so it may not have run in a short test).
        groups = stack.api("/api/v1/rules")["groups"]
        assert {g["name"] for g in groups} == {"slo-recording", "slo-alerts"}
        assert all(r["health"] in ("ok", "unknown") and not r.get("lastError")
                   for g in groups for r in g["rules"]), groups
        fast = stack.query('sum(refsvc_stage_duration_seconds_bucket{job="refsvc",'
                           'stage="infer",le="0.01"})')
        prom_fast = float(fast[0]["value"][1])

    run = RunDir(run_path)
    ok = sum(i["requests"] - i["failures"] for i in run.intervals())
    # Every successful request the harness sent was one infer observation in the service.
    assert ok == end_infer, (ok, end_infer)
    hist = run.histogram("stage", stage="infer", measured_only=False)
    assert hist.get_total_count() == ok
    # The same requests' infer times, bucketed by Prometheus at 10 ms and by HDR (3
    # significant figures: a value within 0.1 % of 10 ms may land on either side).
    harness_fast = sum(it.count_added_in_this_iter_step
                       for it in hist.get_recorded_iterator()
                       if it.value_iterated_to <= 10_000)
    near = sum(it.count_added_in_this_iter_step for it in hist.get_recorded_iterator()
               if 9_980 <= it.value_iterated_to <= 10_020)
    assert abs(harness_fast - prom_fast) <= near + 1, (harness_fast, prom_fast, near)
