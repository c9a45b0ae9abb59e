"""`harness report RUN [RUN_B]`: write the self-contained HTML report and print its path.

RUN may also be a capacity sweep's directory (``harness capacity``): its report is the
latency-throughput curve and every step, linked to the steps' own reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands import CommandError

NAME = "report"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a run (or of two runs compared, "
        "or of a capacity sweep)",
        description="Write report.html into the run directory (report-vs-<RUN_B>.html with two "
        "runs) and print its path. The file embeds its plotting library: it opens offline. "
        "Given a capacity sweep's directory (harness capacity), write SWEEP_DIR/report.html: "
        "the latency-throughput curve, the SLO, the capacity and the knee, and every step "
        "with its verdict and a link to its own report (written beside the step's run when "
        "missing, unless --no-step-reports).")
    p.add_argument("run_dir", type=Path, help="a run directory, or a capacity sweep's")
    p.add_argument("other_run", type=Path, nargs="?", help="a second run to compare against")
    p.add_argument("--slo", type=Path, metavar="FILE", help="SLO file (YAML or JSON) to check")
    p.add_argument("--out", type=Path, metavar="FILE", help="where to write the HTML file")
    p.add_argument("--step-reports", action=argparse.BooleanOptionalAction, default=True,
                   help="with a sweep: write each step's report.html where missing (default)")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.slo import load_slo
    from harness.report import build_report, build_sweep_report, is_sweep_dir
    from harness.rundir import RunDir

    if args.out is not None and not args.out.parent.is_dir():
        raise CommandError(f"--out directory must exist (got {str(args.out.parent)!r})")
    if is_sweep_dir(args.run_dir):
        if args.other_run is not None or args.slo is not None:
            raise CommandError("a sweep's report takes no second run and no --slo: its steps "
                               "were judged by the sweep's own SLO (kept in capacity.json)")
        print(build_sweep_report(args.run_dir, out=args.out, step_reports=args.step_reports))
        return 0
    run = RunDir(args.run_dir)
    other = RunDir(args.other_run) if args.other_run is not None else None
    slo = load_slo(args.slo) if args.slo is not None else None
    path = build_report(run, other, slo=slo, out=args.out)
    print(path)
    return 0
