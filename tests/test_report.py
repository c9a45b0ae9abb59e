"""`harness report`: the icicle and spectrum builders by value, then real runs, the CLI,
and the page in headless Chromium (no console error, no network, plots drawn)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from harness.report import build_icicle, build_report, spectrum_points
from harness.rundir import RunDir
from harness.rundir.stacks import parse_collapsed

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]
sys.path.insert(0, str(Path(__file__).parent))
from browser import Browser  # noqa: E402

COLLAPSED = """\
process 11:"gunicorn";main (app.py:1);run (srv.py:5);handle (app.py:10);infer (model.py:3) 700
process 12:"gunicorn";main (app.py:1);run (srv.py:5);handle (app.py:10);fetch (store.py:8) 296
main (app.py:1);run (srv.py:6);handle (app.py:11);tiny (x.py:1) 4
"""


# -- icicle -----------------------------------------------------------------------------
def test_icicle_merges_workers_and_cuts_the_common_trunk() -> None:
    data = build_icicle(parse_collapsed(COLLAPSED), min_share=0.0, trunk_share=0.99)
    nodes = dict(zip(data.labels, data.values, strict=True))
    # main > run > handle hold all 1000 samples (lines merged), so they are the trunk
    assert data.total_samples == 1000
    assert data.labels[0] == "all samples (below handle (app.py))"
    assert nodes == {"all samples (below handle (app.py))": 1000, "infer (model.py)": 700,
                     "fetch (store.py)": 296, "tiny (x.py)": 4}
    assert set(data.parents[1:]) == {"all"}
    assert "main (app.py) > run (srv.py) > handle (app.py)" in data.hovers[0]


def test_icicle_folds_small_frames_into_their_parent() -> None:
    data = build_icicle(parse_collapsed(COLLAPSED), min_share=0.005, trunk_share=1.1)
    # tiny has 4 / 1000 = 0.4 % < 0.5 %: folded; the parent keeps its 1000 samples
    assert "tiny (x.py)" not in data.labels
    assert data.folded_nodes == 1
    assert data.values[data.labels.index("handle (app.py)")] == 1000
    for node_id, parent in zip(data.ids[1:], data.parents[1:], strict=True):
        assert parent in data.ids[: data.ids.index(node_id)]  # parents come first


def test_icicle_node_cap_keeps_the_largest_frames() -> None:
    data = build_icicle(parse_collapsed(COLLAPSED), min_share=0.0, max_nodes=3,
                        trunk_share=0.99)
    assert data.labels[1:] == ["infer (model.py)", "fetch (store.py)"]
    assert data.folded_nodes == 1


@pytest.mark.parametrize("kwargs", [{"min_share": 1.0}, {"min_share": -0.1}, {"max_nodes": 0}])
def test_icicle_rejects_bad_limits(kwargs: dict[str, float]) -> None:
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{key} must be"):
        build_icicle([], **kwargs)  # type: ignore[arg-type]


# -- spectrum ---------------------------------------------------------------------------
def test_spectrum_points_follow_the_percentiles() -> None:
    hist = HdrHistogram(1, 3_600_000_000, 3)
    for v in range(1, 10_001):  # 1..10000 µs once each: p = v / 100 %
        hist.record_value(v * 100)
    points = spectrum_points(hist)
    by_x = {round(x, 6): (p, v) for x, p, v in points}
    p50, v50 = by_x[round(10 ** (6 / 20), 6)]  # x = 1.995 -> p = 49.88 %
    assert p50 == pytest.approx(100 * (1 - 10 ** (-6 / 20)))
    # 3 significant digits: a value is within 0.1 % of the exact percentile
    assert v50 == pytest.approx(p50 * 10_000, rel=2e-3)
    xs = [x for x, _, _ in points]
    assert xs == sorted(xs) and xs[0] == 1.0 and xs[-1] == 10_000.0
    assert points[-1][2] == pytest.approx(1_000_000, rel=1e-3)  # the maximum, last
    assert spectrum_points(HdrHistogram(1, 3_600_000_000, 3)) == []


# -- real runs --------------------------------------------------------------------------
def _run(out: Path, *extra: str, env: dict[str, str] | None = None) -> Path:
    cmd = [*HARNESS, "run", "--serve", "reference", "--duration", "4s", "--warmup", "1s",
           "--service-workers", "1", "--profile-rate", "50", "--out", str(out), *extra,
           str(ROOT / "tests" / "locustfiles" / "fraud_simple.py")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    found = re.search(r"run directory: (\S+)", done.stdout + done.stderr)
    assert found, f"harness run failed ({done.returncode}): {done.stderr[-2000:]}"
    return Path(found.group(1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A: open model at 30 req/s. B: closed model with store errors and slow fetches."""
    base = tmp_path_factory.mktemp("report-runs")
    faults = base / "faults.yaml"
    faults.write_text("store_errors: {rate: 0.1}\nstore_latency: {ms: 5, distribution: fixed}\n")
    a = _run(base, "--rate", "30")
    # REFSVC_FAULTS (the service's documented env spelling of --faults) reaches the
    # service through the environment; `harness run --faults` currently fails run.json's
    # schema (service_options.faults is written as a path, the schema wants an object).
    b = _run(base, "--users", "4", env={"REFSVC_FAULTS": str(faults)})
    return a, b


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, "report", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def reports(runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path]:
    a, b = runs
    slo = tmp_path_factory.mktemp("slo") / "slo.yaml"
    slo.write_text("objectives:\n  - name: '*'\n    latency: {p99: 2s}\n"
                   "    error_rate: 20%\n")
    single = _report(str(a))
    assert single.returncode == 0, single.stderr
    pair = _report(str(a), str(b), "--slo", str(slo))
    assert pair.returncode == 0, pair.stderr
    return Path(single.stdout.strip()), Path(pair.stdout.strip())


@pytest.mark.slow
def test_cli_writes_self_contained_reports(runs: tuple[Path, Path],
                                           reports: tuple[Path, Path]) -> None:
    a, b = runs
    single, pair = reports
    assert single == a / "report.html"
    assert pair == a / f"report-vs-{b.name}.html"
    page = single.read_text(encoding="utf-8")
    # offline: no external script, stylesheet or font; plotly.js is inline
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']https?:", page)
    assert "Plotly.newPlot" in page and single.stat().st_size < 8_000_000
    for title in ("Latency over time", "Percentile spectrum", "Stage breakdown", "Errors",
                  "CPU and memory", "Profile", "Diagnosis", "Self-check"):
        assert f"<h2>{title}" in page
    two = pair.read_text(encoding="utf-8")
    assert "<h2>Comparison:" in two and "<h2>SLO check" in two
    assert "HTTP 503" in two  # B's injected store errors, in B's section


@pytest.mark.slow
def test_report_of_a_run_without_profile_or_summary(runs: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    copy = tmp_path / "bare"
    shutil.copytree(runs[1], copy, ignore=shutil.ignore_patterns("profile", "summary.json",
                                                                  "report*.html"))
    out = tmp_path / "r.html"
    path = build_report(RunDir(copy), out=out)
    page = path.read_text(encoding="utf-8")
    assert path == out
    assert "the run has no profile" in page
    assert not (copy / "summary.json").exists()  # computed, not written into the run
    assert "HTTP 503" in page  # B's injected store errors, in the errors table


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    done = _report(str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.startswith("harness report:") and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


# -- in a browser -----------------------------------------------------------------------
@pytest.mark.slow
def test_reports_render_in_headless_chromium(reports: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    single, pair = reports
    with Browser() as browser:
        for path, name in ((single, "single"), (pair, "pair")):
            browser.open(path)
            plots = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            drawn = browser.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
                "d => d.querySelector('.main-svg') && d._fullData && d._fullData.length > 0"
                ").length")
            assert plots >= 6, f"{name}: only {plots} plots"
            assert drawn == plots, f"{name}: {plots - drawn} plots did not render"
            assert browser.evaluate("document.querySelectorAll('#plot-profile .slice')"
                                    ".length") > 1, f"{name}: the icicle drew no frames"
            assert browser.console_errors() == [], name
            assert browser.remote_requests() == [], name
            shot = browser.screenshot(tmp_path / f"report-{name}.png")
            assert shot.stat().st_size > 50_000  # a blank page is a few KiB
