"""harness.analysis.summary by value on constructed run directories, and its self-check rules."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator
from test_rundir import T0, RunBuilder, close

from harness.analysis.summary import format_summary, summarize
from harness.rundir import RunDir, load_schema, write_json_atomic

MEASURED = (2, 3, 4, 5, 6)  # interval indexes inside the window (warm-up 2 s, 5 s measured)


def spread(values: list[int]) -> dict[int, list[int]]:
    """Deal values round-robin over the measured intervals, plus warm-up junk."""
    out: dict[int, list[int]] = {0: [3_000_000] * 7, 1: [3_000_000] * 7}
    for i, v in enumerate(values):
        out.setdefault(MEASURED[i % len(MEASURED)], []).append(v)
    return out


def checks(summary: dict) -> dict[str, dict]:
    return {c["check"]: c for c in summary["self_check"]}


def closed_run(tmp_path, loadgen_cpu: float = 40.0) -> RunBuilder:
    b = RunBuilder(tmp_path)
    b.write_meta()
    fraud = list(range(1, 1001))
    for metric in ("client", "client_uncorrected"):
        b.record(metric, "POST predict fraud", spread(fraud))
        b.record(metric, "POST predict churn", spread([1000] * 500))
    b.record("client_failed", "POST predict fraud", spread([50] * 10))
    # every churn request: fetch 200 + infer 500 + serialize 50 = 750 inside app 800, residual 200
    for stage, v in (("fetch", 200), ("infer", 500), ("serialize", 50), ("app", 800)):
        b.record("stage", "POST predict churn", spread([v] * 500), stage=stage)
    b.record("residual", "POST predict churn", spread([200] * 500))
    b.record("client", "POST predict fraud", spread(list(range(1, 101))),
             tag="input_class=null_features")
    b.intervals([{"t": T0 + k, "dt": 1.0, "warmup": k < 2, "requests": 302,
                  "failures": 2 if k >= 2 else 0,
                  "errors": {"POST predict fraud|HTTP 503": 2} if k >= 2 else {}}
                 for k in range(7)])
    b.load(measured={"requests": 1510, "failures": 10, "achieved_rps": 302.0})
    rows = []
    for i in range(20):  # 4 Hz over the 5 s window; a sample at t covers (t - 0.25, t]
        t = T0 + 2 + (i + 1) * 0.25
        rows += [(t, 100, "service_master", "gunicorn", 0.0, 20_000_000, 1, 0, 0, 8),
                 (t, 101, "service_worker", "gunicorn", 30.0 + i, 100_000_000 + i * 1_000_000,
                  4, 0, 0, 12),
                 (t, 102, "service_worker", "gunicorn", 50.0, 100_000_000, 4, 0, 0, 12),
                 (t, 200, "loadgen", "python", loadgen_cpu, 80_000_000, 3, 0, 0, 10),
                 (t, 0, "system", "", 60.0, 0, 0, 0, 0, 0)]
    b.resources(rows)
    return b


def test_closed_run_summary_by_value(tmp_path):
    b = closed_run(tmp_path)
    s = summarize(b.path)
    assert not list(Draft202012Validator(load_schema("summary")).iter_errors(s))
    assert json.loads((b.path / "summary.json").read_text()) == s
    rows = {r["name"]: r for r in s["requests"]}
    assert [r["name"] for r in s["requests"]] == ["POST predict churn", "POST predict fraud", "*"]
    fraud = rows["POST predict fraud"]
    assert (fraud["count"], fraud["failures"]) == (1010, 10)
    assert fraud["rps"] == 1010 / 5.0 and fraud["fail_pct"] == round(100 * 10 / 1010, 4)
    assert fraud["errors"] == {"HTTP 503": 10}
    lat = fraud["latency"]["client"]
    assert (lat["count"], lat["min_us"], lat["max_us"], lat["mean_us"]) == (1000, 1, 1000, 500.5)
    for key, want in (("p50", 500), ("p90", 900), ("p95", 950), ("p99", 990), ("p999", 999)):
        assert close(lat[f"{key}_us"], want), key
    assert lat["low_samples"] == ["p999"]  # 1000 < 2995
    assert "client_uncorrected" not in lat  # closed model: one latency column
    star = rows["*"]
    assert star["count"] == 1510 and star["rps"] == 302.0
    assert star["latency"]["client"]["count"] == 1500
    # ranks 750 and 1350 of {1..1000} + 500 x 1000
    assert star["latency"]["client"]["p50_us"] == 750
    assert star["latency"]["client"]["p90_us"] == 1000
    assert s["load"]["achieved_rps"] == 302.0 and s["window"]["duration_s"] == 5.0
    (tag,) = s["tags"]
    assert (tag["key"], tag["value"], tag["count"]) == ("input_class", "null_features", 100)
    assert close(tag["latency"]["client"]["p99_us"], 99)

    churn = s["stages"]["POST predict churn"]
    shares = {st["stage"]: st["share"] for st in churn["stages"]}
    assert shares == {"app": 0.8, "fetch": 0.2, "infer": 0.5, "serialize": 0.05}
    assert churn["residual"]["share"] == 0.2 and churn["residual"]["mean_us"] == 200
    assert churn["service_total"] == "app" and churn["app_unattributed_share"] == 0.05
    assert churn["schedule_delay_us"] == 0.0
    # over all requests the churn stages weigh by their share of all client time
    star_stages = {st["stage"]: st["share"] for st in s["stages"]["*"]["stages"]}
    client_total = 500.5 * 1000 + 1000 * 500
    assert star_stages["infer"] == round(500 * 500 / client_total, 4)

    res = s["resources"]
    assert res["samples"] == 20 and res["cpu_count"] == 2
    svc = res["service"]
    assert svc["cpu_mean_pct"] == 30 + 9.5 + 50  # worker 101 mean 39.5, worker 102 50
    assert svc["rss_start_bytes"] == 220_000_000 and svc["rss_end_bytes"] == 239_000_000
    assert svc["rss_growth_bytes"] == 19_000_000 and svc["rss_max_bytes"] == 239_000_000
    assert [w["pid"] for w in svc["workers"]] == [101, 102]
    assert svc["workers"][0]["cpu_max_pct"] == 49.0
    assert res["loadgen"]["cpu_mean_pct"] == 40.0 and res["system"]["cpu_mean_pct"] == 60.0
    assert res["machine_share"] == {"service": round(89.5 / 200, 4), "loadgen": 0.2}

    c = checks(s)
    assert c["loadgen_cpu"]["ok"] and c["run_complete"]["ok"] and c["measured_data"]["ok"]
    assert c["samples_p90"]["ok"]  # every row has >= 29
    # p99 needs 299: every request row has them, the tag row (100) does not
    assert c["samples_p99"]["ok"] is False
    assert c["samples_p99"]["detail"].endswith("all successful requests: 1500; too few in: "
                                               "input_class=null_features")
    assert c["samples_p999"]["ok"] is False and c["samples_p999"]["severity"] == "warning"
    assert "p999 needs >= 2995 samples" in c["samples_p999"]["detail"]
    assert c["server_timing"]["ok"] and c["out_of_range"]["ok"] and c["cpu_contention"]["ok"]
    assert c["profiler"] == {"check": "profiler", "ok": False, "severity": "info",
                             "detail": "no profile was recorded"}
    assert "achieved_rate" not in c  # closed model: the users set the rate
    assert s["ok"] is True


def test_format_summary_is_honest_about_precision(tmp_path):
    lines = format_summary(summarize(closed_run(tmp_path).path))
    text = "\n".join(lines)
    fraud = next(ln for ln in lines if ln.startswith("POST predict fraud"))
    cells = fraud.split()
    assert cells[3:6] == ["1010", "202.00", "0.99"]
    assert cells[6] == "0.500" and cells[9] == "~0.999" and cells[10] == "1.000"
    assert "~ fewer samples than a 95 % upper bound" in text
    assert "  infer" in text and "residual" in text and "resources: service cpu 89.5 %" in text
    assert "  ✓ loadgen_cpu:" in text and "  ! samples_p999:" in text
    assert len({len(ln) for ln in lines if ln.startswith(("POST", "*"))}) == 1  # fixed width


def test_loadgen_saturation_is_an_error(tmp_path):
    s = summarize(closed_run(tmp_path, loadgen_cpu=99.0).path)
    c = checks(s)["loadgen_cpu"]
    assert (c["ok"], c["severity"]) == (False, "error")
    assert "above 90 % of a core in 100.0 % of samples" in c["detail"]
    assert s["ok"] is False
    assert any(ln.startswith("  ✗ loadgen_cpu") for ln in format_summary(s))


def open_run(tmp_path) -> RunBuilder:
    b = RunBuilder(tmp_path, model="open", rate=100.0)
    b.write_meta()
    b.record("client", "A", spread([5000] * 300 + [50_000] * 100))
    b.record("client_uncorrected", "A", spread([5000] * 400))
    b.record("lateness", "*", spread([45_000] * 100))
    b.load(target_rps=100.0, negative_residuals=30, server_timing_missing=400,
           measured={"requests": 400, "failures": 0, "achieved_rps": 80.0, "scheduled": 500,
                     "started": 400, "late": 100, "dropped": 100, "late_threshold_us": 1000})
    return b


def test_open_model_rate_lateness_and_corrected_side_by_side(tmp_path):
    b = open_run(tmp_path)
    s = summarize(b.path)
    star = s["requests"][-1]
    assert star["count"] == 400 and star["rps"] == 80.0
    corrected, raw = star["latency"]["client"], star["latency"]["client_uncorrected"]
    assert close(corrected["p90_us"], 50_000) and close(raw["p90_us"], 5000)
    # (300 * 5000 + 100 * 50000) / 400 - 5000, means read at bucket midpoints
    assert close(s["stages"]["*"]["schedule_delay_us"], 11_250)
    c = checks(s)
    assert (c["achieved_rate"]["ok"], c["achieved_rate"]["severity"]) == (False, "error")
    assert "achieved 80.00 req/s of 100.00 target (80.0 %; limit 95 %)" in \
        c["achieved_rate"]["detail"]
    assert (c["late_dropped"]["ok"], c["late_dropped"]["severity"]) == (False, "error")
    assert c["late_dropped"]["detail"] == (
        "100 of 400 requests started late (25.00 %; p99 lateness 45.023 ms), 100 of 500 never "
        "started (20.00 %); late starts are 69.2 % of the mean corrected latency")
    assert s["load"]["lateness_p50_us"] == 45_023 and s["load"]["lateness_max_us"] == 45_023
    assert c["negative_residuals"]["severity"] == "error"  # 30 of 400 > 1 %
    assert c["server_timing"]["ok"] is False and "no stage was reported" in \
        c["server_timing"]["detail"]
    assert (c["loadgen_cpu"]["ok"], c["loadgen_cpu"]["severity"]) == (False, "warning")
    text = "\n".join(format_summary(s))
    assert "uncorrected (from actual send" in text and "target 100 req/s" in text


def test_damaged_run_profiler_out_of_range_and_contention(tmp_path):
    b = RunBuilder(tmp_path)
    b.write_meta(status="running", load_end=None)
    b.record("client", "A", {2: [1000] * 50, 3: [1200] * 50}, out_of_range=3)
    hlog = b.path / "latency" / "client~A.hlog"
    hlog.write_text(hlog.read_text()[:-30])  # died mid-line: interval 3 is lost
    b.intervals([{"t": T0 + k, "dt": 1.0, "warmup": k < 2, "requests": 50, "failures": 0}
                 for k in range(4)])
    b.resources([(T0 + 2 + i / 4, pid, role, "p", cpu, 1, 1, 0, 0, 1) for i in range(8)
                 for pid, role, cpu in ((9, "service_worker", 120.0), (8, "loadgen", 70.0),
                                        (0, "system", 97.0))])
    (b.path / "profile").mkdir()
    write_json_atomic(b.path / "profile" / "status.json",
                      {"ok": True, "samples": 900, "errors": 4, "rate_hz": 100,
                       "lag_warnings": 3, "max_lag_s": 2.5})
    s = summarize(RunDir(b.path))
    c = checks(s)
    assert s["requests"][-1]["count"] == 50 and s["load"]["source"] == "intervals.jsonl"
    assert c["run_complete"]["ok"] is False and c["run_complete"]["severity"] == "error"
    assert "load.json is missing" in c["run_complete"]["detail"]
    assert "measured 2.0 s of 5.0 s planned" in c["run_complete"]["detail"]
    assert "3 values outside" in c["out_of_range"]["detail"] and not c["out_of_range"]["ok"]
    assert c["profiler"]["detail"] == \
        "900 samples at 100 Hz, 4 errors, fell behind 3 times (max 2.50 s)"
    assert (c["profiler"]["ok"], c["profiler"]["severity"]) == (False, "warning")
    assert c["cpu_contention"]["ok"] is False
    assert c["cpu_contention"]["detail"] == (
        "system CPU 97.0 % of 2 cores (limit 90 %); share of the machine: service 60.0 %, "
        "load generator 35.0 %, other 2.0 %")
    assert "truncated last line" in c["run_files"]["detail"]
    assert "truncated last line" in " ".join(s["warnings"])


def test_profiler_check_missed_and_failed_processes(tmp_path):
    # missed (a process that ended, or a window that did, before py-spy attached) is
    # said but is no warning; a sampled process without a profile is one
    b = RunBuilder(tmp_path)
    b.write_meta()
    b.record("client", "A", spread([1000] * 100))
    (b.path / "profile").mkdir()
    status = {"ok": True, "samples": 400, "errors": 0, "rate_hz": 20, "cpu_s": 0.5,
              "window": {"start": T0 + 2, "end": T0 + 12}, "failed_processes": 0,
              "missed_processes": 2}
    write_json_atomic(b.path / "profile" / "status.json", status)
    c = checks(summarize(RunDir(b.path)))
    assert c["profiler"]["detail"] == (
        "400 samples at 20 Hz, 0 errors; py-spy used 0.50 CPU-s (5.0 % of a core); "
        "2 processes not profiled (ended, or the window did, before py-spy attached)")
    assert c["profiler"]["ok"] is True
    note = "py-spy wrote no profile for 1 of 4 sampled processes (pid 7: boom): partial"
    write_json_atomic(b.path / "profile" / "status.json",
                      {**status, "missed_processes": 0, "failed_processes": 1, "note": note})
    c = checks(summarize(RunDir(b.path)))
    assert c["profiler"]["detail"].endswith(f"(5.0 % of a core); {note}")
    assert (c["profiler"]["ok"], c["profiler"]["severity"]) == (False, "warning")


def test_slightly_late_starts_are_a_warning_not_an_error(tmp_path):
    b = RunBuilder(tmp_path, model="open", rate=100.0)
    b.write_meta()
    b.record("client", "A", spread([10_000] * 480 + [11_000] * 20))
    b.record("client_uncorrected", "A", spread([10_000] * 500))
    b.load(target_rps=100.0, measured={"requests": 500, "failures": 0, "scheduled": 500,
                                       "started": 500, "late": 20, "dropped": 0})
    s = summarize(b.path, write=False)
    c = checks(s)["late_dropped"]
    assert (c["ok"], c["severity"]) == (False, "warning")  # 4 % late, delay 0.4 % of latency
    assert checks(s)["achieved_rate"]["ok"] and not (b.path / "summary.json").exists()


def test_profile_stage_shares_by_value(tmp_path):
    b = closed_run(tmp_path)
    assert summarize(b.path, write=False)["profile"] is None  # no profiler ran
    (b.path / "profile").mkdir()
    write_json_atomic(b.path / "profile" / "stages.json",
                      {"oncpu": {"infer": 60, "fetch": 15, "framework": 25, "other": 0},
                       "wall": {"fetch": 30, "infer": 10}})
    s = summarize(b.path, write=False)
    assert s["profile"] == {
        "oncpu": {"samples": 100, "shares": {"infer": 0.6, "framework": 0.25, "fetch": 0.15}},
        "wall": {"samples": 40, "shares": {"fetch": 0.75, "infer": 0.25}},
    }
    text = "\n".join(format_summary(s))
    assert "profile (on-CPU samples, 100): infer 60.0 % · framework 25.0 % · fetch 15.0 %" in text
