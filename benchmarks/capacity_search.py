"""Benchmark: how long `harness capacity` takes to bracket the capacity within ±5 %.

Target (issue 5): within ±5 % in <= 2 minutes on the reference service. Setup: one sync
gunicorn worker with a 30 ms CPU burn in inference (a service whose capacity is set by
one worker's service time), SLO p50 <= 1 s, start 4 req/s, steps of 4 s + 1 s warm-up.

    .venv/bin/python benchmarks/capacity_search.py [--out DIR]

Prints the curve, the bracket and the wall time; results go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness.analysis.slo import parse_slo
from harness.run import RunOptions
from harness.run.capacity import CapacityOptions, find_capacity, format_capacity
from harness.run.target import ServeOptions

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="capbench-")))
    args = parser.parse_args()
    faults = args.out / "faults.yaml"
    args.out.mkdir(parents=True, exist_ok=True)
    faults.write_text("inference_cpu: {ms: 30}\n")
    template = RunOptions(scenario=REPO / "tests" / "locustfiles" / "fraud_simple.py",
                          serve="reference", rate=1.0, collectors={"profile": None}, out=args.out,
                          serve_options=ServeOptions(workers=1, faults=str(faults)))
    opts = CapacityOptions(template=template,
                           slo=parse_slo({"objectives": [{"latency": {"p50": "1s"}}]}),
                           start_rps=4.0, tolerance=0.05, max_steps=16, step_s=4.0,
                           warmup_s=1.0, out=args.out)
    began = time.monotonic()
    result = find_capacity(opts)
    elapsed = time.monotonic() - began
    for line in format_capacity(result):
        print(line)
    if result.capacity_rps and result.limit_rps:
        half = (result.limit_rps - result.capacity_rps) / 2
        mid = result.capacity_rps + half
        print(f"bracket {result.capacity_rps:g}..{result.limit_rps:g} req/s = {mid:.2f} "
              f"± {100 * half / mid:.1f} %; {len(result.steps)} steps; {elapsed:.1f} s wall")
    return 0 if result.converged else 1


if __name__ == "__main__":
    raise SystemExit(main())
