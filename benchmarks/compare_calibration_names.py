"""Calibration of the one-run comparison (`harness versions`, `harness compare RUN --name-a
--name-b`): false alarms on A/A, detection and CI coverage on A/B, within one run.

    .venv/bin/python benchmarks/compare_calibration_names.py [--runs 10] [--duration 10]

(Comparisons across separate runs: benchmarks/compare_calibration.py.)

Each run loads tests/known_latency_server.py through `harness run --target` (open model,
no profiler) with benchmarks/locustfiles/calibration_names.py: four request names
interleaved at random, whose delays the locustfile draws from a known lognormal (median
10 ms, sigma 0.5) and asks the server for (``?delay_ms=``): ``A`` and ``A2`` the same
distribution (A/A), ``B10`` and ``B30`` 10 % and 30 % slower at every quantile. The
comparisons are `harness.analysis.compare.compare_names(run, name_a, name_b)` (what `harness
versions` runs: both sides under the same machine conditions, so what is calibrated is the
statistics; Holm over each pair's rows and the 5 % margin included).

Reported per pair and percentile (p50, p90, p99): the share of runs with verdict "no
significant difference" (A/A: target >= 95 %), the share detected as "slower" (A/B), and
the CI coverage: the share of intervals that contain the true difference. The truth is
the server's ``total`` stage (what it slept, which the harness records exactly): the true
difference at p is (factor - 1) x 10 ms x exp(0.5 z_p) plus nothing, since the
stack overhead is the same for every name; it is checked on the ``total`` stage series
and, for detection, also on the client series.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from known_latency_server import start_subprocess  # noqa: E402

from harness.analysis.compare import compare_names  # noqa: E402
from harness.rundir import RunDir  # noqa: E402

LOCUSTFILE = ROOT / "benchmarks" / "locustfiles" / "calibration_names.py"
PAIRS = (("A", "A2", 1.0), ("A", "B10", 1.1), ("A", "B30", 1.3))
PERCENTILES = (50.0, 90.0, 99.0)
MEDIAN_MS, SIGMA = 10.0, 0.5
Z = {50.0: 0.0, 90.0: 1.2815515655446004, 99.0: 2.3263478740408408}


def true_diff_us(factor: float, p: float) -> float:
    """B - A at the p-th percentile of the lognormal delays, µs."""
    return (factor - 1.0) * MEDIAN_MS * 1000.0 * math.exp(SIGMA * Z[p])


def one_run(out: Path, *, rate: float, duration: float, seed: int) -> Path:
    import subprocess

    proc, port = start_subprocess(["--stages", "sleep", "--split", "1.0",
                                   "--total-name", "total"])
    try:
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CALIBRATION_SEED": str(seed)}
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", str(LOCUSTFILE), "--target",
             f"http://127.0.0.1:{port}", "--rate", f"{rate:g}", "--users", "20",
             "--duration", f"{duration:g}s", "--warmup", "1s", "--no-profile",
             "--seed", str(seed), "--out", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 120)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    dirs = [p for p in out.iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"harness run left {len(dirs)} run directories (exit "
                           f"{done.returncode}): {done.stderr[-2000:]}")
    return dirs[0]


def evaluate(run_path: Path) -> list[dict]:
    """One row per (pair, series, percentile): verdict, diff and whether the CI covers."""
    run = RunDir(run_path)
    rows = []
    for a, b, factor in PAIRS:
        c = compare_names(run, a, b, percentiles=PERCENTILES)
        for r in c.rows:
            metric, stage = r.series.metric, r.series.stage
            if not (metric == "client" or (metric == "stage" and stage == "total")):
                continue
            truth = true_diff_us(factor, r.percentile)
            low, high = r.sample_low_us, r.sample_high_us
            covered = None if low is None or high is None else low <= truth <= high
            a_us, b_us = r.a_runs[0], r.b_runs[0]
            rows.append({"pair": f"{a} vs {b}", "factor": factor, "series":
                         "client" if metric == "client" else "stage total",
                         "p": r.percentile, "verdict": r.verdict,
                         "diff_us": None if a_us is None or b_us is None else b_us - a_us,
                         "truth_us": truth, "covered": covered, "n": min(r.a_n, r.b_n)})
    return rows


def format_calibration(runs: list[list[dict]]) -> list[str]:
    lines = ["| pair | series | p | no significant difference | detected slower | "
             "CI covers the truth | median diff (truth) ms | n per name |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((r["pair"], r["series"], r["p"]) for r in runs[0]))
    for pair, series, p in keys:
        rows = [r for run in runs for r in run if (r["pair"], r["series"], r["p"])
                == (pair, series, p)]
        k = len(rows)
        nsd = sum(r["verdict"] == "no significant difference" for r in rows)
        slower = sum(r["verdict"] == "slower" for r in rows)
        cov = [r["covered"] for r in rows if r["covered"] is not None]
        cover = f"{sum(cov)}/{len(cov)}" if series == "stage total" and cov else "-"
        diffs = [r["diff_us"] for r in rows if r["diff_us"] is not None]
        lines.append(f"| {pair} | {series} | {p:g} | {nsd}/{k} | {slower}/{k} | {cover} | "
                     f"{statistics.median(diffs) / 1000:.3f} ({rows[0]['truth_us'] / 1000:.3f})"
                     f" | {statistics.median(r['n'] for r in rows):.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.rate <= 0 or args.duration <= 0:
        ap.error("need --runs >= 1, --rate > 0, --duration > 0")
    out = args.out or Path(tempfile.mkdtemp(prefix="calibration-"))
    t0 = time.time()
    runs = []
    for i in range(args.runs):
        runs.append(evaluate(one_run(out / f"run{i}", rate=args.rate,
                                     duration=args.duration, seed=i + 1)))
        print(f"run {i} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print("\n".join(format_calibration(runs)))
    print(f"\n{args.runs} runs of {args.duration:g} s at {args.rate:g} req/s (4 names "
          f"interleaved); load average {os.getloadavg()[0]:.1f}; wall {time.time() - t0:.0f} s;"
          f" runs in {out}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
