"""harness compare: the difference interval by value and by simulation, comparability,
and end-to-end on real runs of the reference service (A/A, interleaved v1/v2, and a
separate run with a known CPU burn injected into inference)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from synthetic_runs import make_run

from harness import stats
from harness.analysis.compare import compare, format_comparison
from harness.analysis.slo import check, parse_slo
from harness.rundir import RunDir, write_run_json
from harness.stats.compare import quantile_diff, verdict_for

REPO = Path(__file__).resolve().parent.parent
BURN_MS = 15


def _hist(values: np.ndarray) -> HdrHistogram:
    h = HdrHistogram(1, 3_600_000_000, 3)
    uniq, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    for v, c in zip(uniq, counts, strict=True):
        assert h.record_value(int(v), int(c))
    return h


# -- by value ------------------------------------------------------------------------------
def test_difference_interval_by_hand() -> None:
    # A: 1..1000 ms, B: the same shifted by 100 ms. Each side's interval is taken at
    # (1 + 0.95) / 2 = 0.975; rank r of A is r ms, of B r + 100 ms.
    a = _hist(np.arange(1, 1001) * 1000)
    b = _hist((np.arange(1, 1001) + 100) * 1000)
    lo, hi = stats.quantile_ci_ranks(1000, 50, 0.975)
    assert lo is not None and hi is not None
    d = quantile_diff(a, b, 50, 0.95)
    assert d.diff_us == pytest.approx(100_000, rel=0.003)
    want_low, want_high = (lo + 100 - hi) * 1000, (hi + 100 - lo) * 1000
    # Bucket edges widen each end by at most 0.1 % of the values involved.
    assert abs(d.ci_low_us - want_low) <= 0.001 * 1_200_000
    assert abs(d.ci_high_us - want_high) <= 0.001 * 1_200_000
    assert d.ci_low_us < 100_000 < d.ci_high_us
    assert verdict_for(d) == "slower"
    assert verdict_for(quantile_diff(b, a, 50)) == "faster"
    assert verdict_for(d, min_effect_pct=30) == "no significant difference"  # 100 of ~500 ms


def test_too_few_samples_is_insufficient_data() -> None:
    a = _hist(np.full(50, 1000))
    d = quantile_diff(a, a, 99.9)
    assert d.ci_low_us is None and verdict_for(d) == "insufficient data"
    with pytest.raises(ValueError, match="min_effect_pct must be >= 0"):
        verdict_for(d, -1)


def test_aa_false_alarms_and_shift_coverage_by_simulation() -> None:
    """Calibration: 150 A/A pairs from a lognormal (median 5 ms, sigma 0.5, n = 2000)
    must give a significant difference in at most 5 % of rows (the interval is
    conservative, so expect about 0); with B shifted by 1 ms the interval covers the
    true shift in at least 95 % of pairs."""
    rng = np.random.default_rng(7)
    false_alarms = misses = rows = 0
    for _ in range(150):
        a_vals = np.rint(np.exp(rng.normal(np.log(5000), 0.5, 2000)))
        b_vals = np.rint(np.exp(rng.normal(np.log(5000), 0.5, 2000)))
        a, b, shifted = _hist(a_vals), _hist(b_vals), _hist(b_vals + 1000)
        for p in (50, 90, 99):
            rows += 1
            false_alarms += verdict_for(quantile_diff(a, b, p)) != "no significant difference"
            d = quantile_diff(a, shifted, p)
            misses += not (d.ci_low_us <= 1000 <= d.ci_high_us)
    assert false_alarms <= 0.05 * rows
    assert misses <= 0.05 * rows


def test_not_comparable_runs_are_refused_unless_forced(tmp_path: Path) -> None:
    values = {("client", "predict", None): np.full(500, 3000)}
    a = make_run(tmp_path / "a", values)
    b = make_run(tmp_path / "b", values, environment={"hostname": "other", "cpu_model": "c",
                                                      "cpu_logical": 8},
                 load={"users": 40})
    c = compare(a, b)
    assert not c.comparable
    text = "\n".join(c.problems)
    assert "host differs" in text and "CPU count differs" in text and "users" in text
    assert "NOT COMPARABLE" in "\n".join(format_comparison(c))
    cmd = [sys.executable, "-m", "harness.cli", "compare", str(a.path), str(b.path)]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "not comparable" in refused.stderr
    forced = subprocess.run([*cmd, "--force"], capture_output=True, text=True, timeout=60)
    assert forced.returncode == 0 and "no significant difference" in forced.stdout


def _with_target(run: RunDir, target: dict) -> RunDir:
    meta = json.loads((run.path / "run.json").read_text())
    write_run_json(run.path, {**meta, "target": target})
    return RunDir(run.path)


def test_differing_tags_service_options_and_models_are_listed(tmp_path: Path) -> None:
    """A 1-worker and a 2-worker run of an external service, told apart by --tag: the
    notes list the tags that differ, not only the port."""
    values = {("client", "predict", None): np.full(300, 3000)}
    a = make_run(tmp_path / "a", values, load={"tags": {"workers": "1", "svc": "fastapi"}})
    b = make_run(tmp_path / "b", values, load={"tags": {"workers": "2", "svc": "fastapi",
                                                        "note": "after the fix"}})
    models = {"eta": {"versions": ["v1", "v2"], "default_version": "v1"}}
    a = _with_target(a, {"url": "http://127.0.0.1:8001", "served_by_harness": False,
                         "models": models})
    b = _with_target(b, {"url": "http://127.0.0.1:8002", "served_by_harness": False,
                         "models": {"eta": {**models["eta"], "default_version": "v2"}}})
    c = compare(a, b)
    assert c.comparable
    assert c.notes == [
        "tag note differs: A None, B 'after the fix'",
        "tag workers differs: A '1', B '2'",
        "target differs: A 'http://127.0.0.1:8001', B 'http://127.0.0.1:8002'",
        "model eta differs: A {'versions': ['v1', 'v2'], 'default_version': 'v1'}, "
        "B {'versions': ['v1', 'v2'], 'default_version': 'v2'}"]
    assert "  tag workers differs: A '1', B '2'" in format_comparison(c)
    # two served runs: their service options, and no target line for the port
    served = {"url": "http://127.0.0.1:1", "served_by_harness": True,
              "service_options": {"workers": 1, "store": "sqlite"}}
    a = _with_target(a, served)
    b = _with_target(b, {**served, "url": "http://127.0.0.1:2",
                         "service_options": {"workers": 2, "store": "sqlite"}})
    notes = compare(a, b).notes
    assert "service option workers differs: A 1, B 2" in notes
    assert not any(n.startswith(("target", "model")) for n in notes)


# -- end to end on real runs ----------------------------------------------------------------
def _run(out: Path, faults: Path | None) -> Path:
    from harness.run import RunOptions, run
    from harness.run.target import ServeOptions, serve_reference

    # The service is started here and the run pointed at it (as harness capacity does),
    # so both runs' metadata describe the same kind of target.
    served = serve_reference(ServeOptions(faults=str(faults) if faults else None),
                             out / f"service-{faults is not None}.log")
    try:
        opts = RunOptions(scenario=REPO / "tests" / "locustfiles" / "compare_three.py",
                          target=served.url, users=3, duration_s=8.0, warmup_s=2.0, out=out,
                          collectors={"profile": None})
        return run(opts).run_dir
    finally:
        served.stop()


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, RunDir]:
    out = tmp_path_factory.mktemp("compare-runs")
    faults = out / "faults.yaml"
    faults.write_text(f"inference_cpu: {{ms: {BURN_MS}}}\n")
    return RunDir(_run(out, None)), RunDir(_run(out, faults))


@pytest.mark.slow
def test_same_run_aa_says_no_significant_difference(real_runs: tuple[RunDir, RunDir]) -> None:
    """BENCHMARKS.md claims >= 95 % of A/A comparisons say "no significant difference"
    (60/60 measured). Here: the two names of one request (interleaved at random) in each
    of the two real runs, 6 series x 2 percentiles x 2 runs = 24 rows, and at most one
    false alarm: 95.8 % when all 24 are decided. The bar is a count, set from the
    statistic's behaviour: a row alarms only when the two sides' sqrt(95 %) intervals do
    not overlap, and rows of one run are not independent (client = app + residual, p50
    and p90 of one series); simulated on lognormal stages with that dependence (3000 runs
    of 12 rows, 900 requests a name), a run had one false alarm 1 % of the time and two
    0.1 %, so two runs give two or more with a probability of about 0.3 %. A name-dependent
    bias of the pipeline (recording, merging) moves whole series: several rows at once.
    With both cores busy the burned run once had 29 requests a name, too few for its p90
    rows ("insufficient data", not counted): then one alarm is 1 in 18."""
    rows = []
    for run in real_runs:
        c = compare(run, run, name_a="predict fraud v1 a", name_b="predict fraud v1 b",
                    percentiles=(50, 90))
        rows += [(run.path.name, r) for r in c.rows if r.verdict != "insufficient data"]
    # client, app, fetch, infer, serialize, residual: every p50 and at least one run's p90
    assert len(rows) >= 18
    alarms = [(name, r.metric, r.stage, r.percentile, r.verdict) for name, r in rows
              if r.verdict != "no significant difference"]
    assert len(alarms) <= 1, alarms


@pytest.mark.slow
def test_interleaved_versions_and_separate_runs_detect_known_slowdowns(
        real_runs: tuple[RunDir, RunDir], tmp_path: Path) -> None:
    base, burned = real_runs
    # v2 does more work in inference than v1 (measured: about +65 % at p50).
    versions = compare(base, base, name_a="predict fraud v1 a", name_b="predict fraud v2",
                       percentiles=(50,))
    infer = next(r for r in versions.rows if r.stage == "infer")
    assert infer.verdict == "slower", "\n".join(format_comparison(versions))
    # A known CPU burn in inference: detected, with the right sign and a size of the burn's
    # order. The two runs share 2 cores with different traffic (the base run interleaves
    # v2), so the wall-clock growth of the stage is the burn +- the difference in CPU
    # contention between them: at least half the burn, as a stated tolerance.
    c = compare(base, burned, name_a="predict fraud v1 a", name_b="predict fraud v1 a",
                percentiles=(50,))
    assert c.comparable, c.problems
    infer = next(r for r in c.rows if r.stage == "infer")
    assert infer.verdict == "slower", "\n".join(format_comparison(c))
    assert infer.ci_low_us >= BURN_MS * 1000 * 0.5, infer
    client = next(r for r in c.rows if r.metric == "client")
    assert client.verdict == "slower"
    # The command on one run per side without a noise calibration: the samples say these
    # two runs differ, but not how much two runs of the same thing would, so the verdict is
    # inconclusive (exit 2), never "slower"; the SLO verdict per side is printed.
    slo = tmp_path / "slo.yaml"
    slo.write_text("objectives:\n  - latency: {p50: 60s}\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(base.path),
                           str(burned.path), "--slo", str(slo), "--percentiles", "50",
                           "--no-noise"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # ... or, when the machine's speed probe moved between the two runs by more than the
    # gate's 10 %, "not comparable" (also exit 2) naming that cause. Measured on this VM,
    # the probe moves with the host's neighbours, not with the runs' own load (a busy loop
    # on either core left it unchanged; BENCHMARKS.md), so a quiet-looking machine can
    # still shift under the test: both outcomes are right, "slower" never is.
    overall = proc.stdout.split("overall:")[1]
    if "not comparable" in overall:
        assert "the machine's speed changed" in proc.stdout, proc.stdout
    else:
        assert overall.lstrip().startswith("inconclusive"), proc.stdout
    assert "slower" not in overall
    assert "SLO side A: 1/1 pass" in proc.stdout and "SLO side B: 1/1 pass" in proc.stdout


@pytest.mark.slow
def test_check_on_a_real_run(real_runs: tuple[RunDir, RunDir]) -> None:
    run, _ = real_runs
    slo = parse_slo({"objectives": [{"name": "predict fraud v1 a", "latency": {"p50": "60s"},
                                     "error_rate": "50%"}]})
    easy = check(run, slo)
    assert [r.verdict for r in easy.rows] == ["pass", "pass"]
    # every row passes, so the verdict is the run's own self-check: "invalid" exactly when
    # one of its checks failed with severity error (a busy host can trip one), else "pass"
    errors = [f"{c['check']}: {c['detail']}" for c in
              json.loads((run.path / "summary.json").read_text())["self_check"]
              if not c["ok"] and c["severity"] == "error"]
    assert (easy.verdict, easy.self_check_errors) == ("invalid" if errors else "pass", errors)
    assert check(run, slo, ignore_self_check=True).verdict == "pass"
    hard = check(run, parse_slo({"objectives": [{"latency": {"p50": "1us"}}]}),
                 ignore_self_check=True)
    assert hard.verdict == "fail"
