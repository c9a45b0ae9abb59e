"""`harness compare RUN_A RUN_B` (or one run with --name-a/--name-b): B against A."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands import EXIT_USAGE, print_result

NAME = "compare"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare", help="compare two runs (or two request names of one run)",
        description="Compare run B against run A per request, stage and percentile, with "
                    "distribution-free confidence intervals of the difference. Refuses runs "
                    "that are not comparable (host, CPUs, scenario, load settings) unless "
                    "--force. Exit 0 when compared, 2 when refused or on bad input.")
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path, nargs="?",
                   help="omit to compare two request names of RUN_A (--name-a, --name-b)")
    p.add_argument("--name-a", help="request name on the A side (e.g. 'predict fraud v1')")
    p.add_argument("--name-b", help="request name on the B side")
    p.add_argument("--slo", type=Path, help="also check each side against this SLO file")
    p.add_argument("--confidence", type=float, default=0.95, help="default 0.95")
    p.add_argument("--percentiles", default="50,90,99,99.9", help="default 50,90,99,99.9")
    p.add_argument("--min-effect", type=float, default=0.0, metavar="PCT",
                   help="call differences below PCT %% of A 'no significant difference'")
    p.add_argument("--force", action="store_true", help="compare even if not comparable")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--percentiles must be numbers separated by commas (got {text!r})") \
            from None
    if not values or not all(0 < v < 100 for v in values):
        raise ValueError(f"--percentiles must be in (0, 100) (got {text!r})")
    return values


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.compare import compare, format_comparison
    from harness.analysis.slo import load_slo
    from harness.rundir import RunDir

    a = RunDir(args.run_a)
    b = RunDir(args.run_b) if args.run_b is not None else a
    slo = load_slo(args.slo) if args.slo is not None else None
    result = compare(a, b, slo, args.confidence, name_a=args.name_a, name_b=args.name_b,
                     percentiles=_percentiles(args.percentiles), min_effect_pct=args.min_effect)
    print_result(result, args.json, format_comparison)
    if not result.comparable and not args.force:
        print("harness compare: the runs are not comparable (see above); --force to compare "
              "anyway", file=sys.stderr)
        return EXIT_USAGE
    return 0
