"""The capacity search's answer against a brute-force sweep of fixed rates.

    .venv/bin/python benchmarks/capacity_bruteforce.py [--rounds 2] [--grid 0.05] [--span 0.25]

Setup as benchmarks/capacity_search.py: the reference service with one sync worker and a
30 ms CPU burn in inference (capacity set by one worker's service time), SLO p50 <= 1 s,
steps of 4 s + 1 s warm-up. Each round runs `harness.run.capacity.find_capacity`, then every
fixed rate of a grid from (1 - span) to (1 + span) x the search's answer in steps of
``grid`` x the answer, each a run of the same length checked against the same SLO. The
brute-force capacity is the highest grid rate that passed below the lowest that failed;
the search is within +-5 % when |search - brute| <= 5 % of brute (the grid's own
resolution is ``grid``, so the comparison cannot be finer than that). The search runs
again after the sweep: its answer is the mean of the two, and their difference is the
machine's drift over the round (one sync worker's capacity is one core's worth of work,
so other processes on the machine move it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.slo import check, parse_slo  # noqa: E402
from harness.run import RunOptions, run  # noqa: E402
from harness.run.capacity import CapacityOptions, find_capacity, step_seconds  # noqa: E402
from harness.run.target import ServeOptions  # noqa: E402
from harness.rundir import RunDir  # noqa: E402


def options(out: Path) -> CapacityOptions:
    faults = out / "faults.yaml"
    out.mkdir(parents=True, exist_ok=True)
    faults.write_text("inference_cpu: {ms: 30}\n")
    template = RunOptions(scenario=ROOT / "tests" / "locustfiles" / "fraud_simple.py",
                          serve="reference", rate=1.0, collectors={"profile": None}, out=out,
                          serve_options=ServeOptions(workers=1, faults=str(faults)))
    return CapacityOptions(template=template,
                           slo=parse_slo({"objectives": [{"latency": {"p50": "1s"}}]}),
                           start_rps=4.0, tolerance=0.05, max_steps=16, step_s=4.0,
                           warmup_s=1.0, out=out)


def fixed_rate_passes(opts: CapacityOptions, rate: float, out: Path) -> bool:
    """One fixed-rate run of the same length as a search step, checked against the SLO."""
    step = dataclasses.replace(opts.template, rate=round(rate, 3), users=None,
                               spawn_rate=None, duration_s=step_seconds(opts, rate),
                               warmup_s=opts.warmup_s, out=out)
    return check(RunDir(run(step).run_dir), opts.slo).verdict == "pass"


def brute_force(opts: CapacityOptions, center: float, span: float, grid: float,
                out: Path) -> tuple[float | None, list[tuple[float, bool]]]:
    rates = [center * (1 - span + i * grid) for i in range(int(round(2 * span / grid)) + 1)]
    results = [(r, fixed_rate_passes(opts, r, out)) for r in rates]
    failed = [r for r, ok in results if not ok]
    lowest_fail = min(failed) if failed else None
    passed = [r for r, ok in results if ok and (lowest_fail is None or r < lowest_fail)]
    return (max(passed) if passed else None), results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--grid", type=float, default=0.05)
    ap.add_argument("--span", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.rounds < 1 or not 0 < args.grid <= args.span < 1:
        ap.error("need --rounds >= 1 and 0 < --grid <= --span < 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="capbrute-"))
    rows = []
    for r in range(args.rounds):
        opts = options(out / f"round{r}")
        t0 = time.monotonic()
        result = find_capacity(opts)
        search_s = time.monotonic() - t0
        if not result.capacity_rps:
            print(f"round {r}: the search found no capacity ({result.reason})", file=sys.stderr)
            continue
        t0 = time.monotonic()
        brute, grid = brute_force(opts, result.capacity_rps, args.span, args.grid,
                                  out / f"round{r}" / "brute")
        brute_s = time.monotonic() - t0
        # The search again after the sweep: the machine's own drift over the round, which
        # the comparison cannot be finer than.
        again = find_capacity(options(out / f"round{r}" / "again")).capacity_rps
        searches = [result.capacity_rps] + ([again] if again else [])
        mean = statistics.fmean(searches)
        drift = (max(searches) - min(searches)) / mean
        err = None if brute is None else (mean - brute) / brute
        rows.append((result.capacity_rps, again, brute, err, drift, search_s, brute_s,
                     len(result.steps)))
        print(f"round {r}: search {result.capacity_rps:g} (limit {result.limit_rps}) in "
              f"{search_s:.0f} s / {len(result.steps)} steps; brute force {brute} in "
              f"{brute_s:.0f} s: " + ", ".join(f"{x:.1f}{'+' if ok else '-'}" for x, ok in grid)
              + f"; search again {again}", file=sys.stderr, flush=True)
    print("| round | search before | search after | brute force (between) | "
          "mean search - brute | search drift | search wall | steps | brute-force wall |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (cap, again, brute, err, drift, ss, bs, n) in enumerate(rows):
        print(f"| {i} | {cap:g} | {again} | {brute and round(brute, 2)} | "
              f"{'-' if err is None else f'{100 * err:+.1f} %'} | {100 * drift:.1f} % | "
              f"{ss:.0f} s | {n} | {bs:.0f} s |")
    errs = [abs(x[3]) for x in rows if x[3] is not None]
    if errs:
        print(f"\nmedian |search - brute| {100 * statistics.median(errs):.1f} % (grid "
              f"{100 * args.grid:g} %); load average {os.getloadavg()[0]:.1f}; runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
