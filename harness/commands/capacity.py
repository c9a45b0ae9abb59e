"""`harness capacity SCENARIO --slo FILE`: the highest arrival rate that meets the SLO."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.commands import EXIT_USAGE

NAME = "capacity"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "capacity", help="find the highest arrival rate that meets an SLO (open-model sweep)",
        description="Open-model sweep of the arrival rate: coarse doubling steps, then "
                    "bisection, then re-tests of the bracket's ends until each has a "
                    "majority, each step a run directory under one sweep directory with "
                    "capacity.json. Exit 0 when the capacity was bracketed within the "
                    "tolerance, 1 when the SLO fails even at the minimum rate, 3 when the "
                    "search did not converge, 2 on bad input. See docs/slo.md.")
    p.add_argument("scenario", type=Path, help="a locustfile")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", metavar="URL", help="a running service")
    where.add_argument("--serve", choices=["reference"], help="start the reference service "
                       "once for the whole sweep")
    p.add_argument("--slo", type=Path, required=True, help="SLO file (YAML or JSON)")
    p.add_argument("--start-rate", type=float, default=10.0, help="first rate, req/s (10)")
    p.add_argument("--min-rate", type=float, default=1.0, help="lowest rate tried (1)")
    p.add_argument("--max-rate", type=float, default=5000.0, help="highest rate tried (5000)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="stop when (fail - pass) / pass <= this (0.05)")
    p.add_argument("--max-steps", type=int, default=16,
                   help="at most this many runs, re-tests of the bracket's ends included (16)")
    p.add_argument("--step", default="8s", help="measured time of each step (8s)")
    p.add_argument("--warmup", default="2s", help="warm-up of each step (2s)")
    p.add_argument("--arrival", choices=["poisson", "constant"], default="poisson")
    p.add_argument("--service-workers", type=int, default=2, help="gunicorn workers (2)")
    p.add_argument("--faults", help="fault configuration file of the reference service")
    p.add_argument("--model-version", action="append", default=[], metavar="MODEL=VERSION")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=False,
                   help="profile each step with py-spy (default: off)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where the sweep goes")
    p.add_argument("--json", action="store_true", help="print capacity.json")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.slo import load_slo
    from harness.run import RunOptions
    from harness.run.capacity import CapacityError, CapacityOptions, find_capacity, format_capacity
    from harness.run.target import ServeOptions
    from harness.units import parse_duration, parse_versions

    try:
        slo = load_slo(args.slo)
        template = RunOptions(
            scenario=args.scenario, target=args.target, serve=args.serve,
            serve_options=ServeOptions(workers=args.service_workers, faults=args.faults,
                                       versions=parse_versions(args.model_version)),
            rate=args.start_rate, arrival=args.arrival, out=args.out,
            collectors={"profile": args.profile},
            command_line=tuple(["harness", *argv]))
        options = CapacityOptions(
            template=template, slo=slo, start_rps=args.start_rate, min_rps=args.min_rate,
            max_rps=args.max_rate, tolerance=args.tolerance, max_steps=args.max_steps,
            step_s=parse_duration(args.step, what="step"),
            warmup_s=parse_duration(args.warmup, what="warmup"), out=args.out)
    except (OSError, ValueError) as exc:
        print(f"harness capacity: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def progress(step: Any) -> None:
        print(f"step {step.index} ({step.phase}) {step.rate_rps:g} req/s: {step.verdict} "
              f"({step.elapsed_s:.0f} s)", file=sys.stderr, flush=True)

    try:
        result = find_capacity(options, on_step=progress)
    except CapacityError as exc:
        print(f"harness capacity: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in format_capacity(result):
            print(line)
        print(f"report: harness report {result.sweep_dir}")
    if result.converged:
        return 0
    return 1 if result.capacity_rps is None and result.limit_rps is not None \
        and len(result.steps) < options.max_steps else 3
