"""The local stack: Debian's Prometheus scrapes the reference service during a harness run;
its view of the stage histogram must match what the harness counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.exports.stack import PrometheusStack, prometheus_config
from harness.rundir import RunDir
from harness.rundir.scrapes import histogram_delta, read_scrape

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus missing: make system-deps")


def test_config_is_checked() -> None:
    cfg = prometheus_config("127.0.0.1:8000", 1.0, ["r.yml"])
    assert cfg["scrape_configs"][0]["job_name"] == "refsvc"
    assert cfg["global"]["scrape_interval"] == "1000ms"
    with pytest.raises(ValueError, match="host:port"):
        prometheus_config("http://127.0.0.1:8000/metrics")
    with pytest.raises(ValueError, match="scrape_interval_s"):
        prometheus_config("127.0.0.1:8000", 0.0)


def _infer_count(stack: PrometheusStack) -> float | None:
    res = stack.query('sum(refsvc_stage_duration_seconds_count{job="refsvc",stage="infer"})')
    return float(res[0]["value"][1]) if res else None


@pytest.mark.slow
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
