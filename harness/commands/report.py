"""`harness report RUN [RUN_B]`: write the self-contained HTML report and print its path."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands import CommandError

NAME = "report"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a run (or of two runs compared)",
        description="Write report.html into the run directory (report-vs-<RUN_B>.html with two "
        "runs) and print its path. The file embeds its plotting library: it opens offline.")
    p.add_argument("run_dir", type=Path, help="a run directory")
    p.add_argument("other_run", type=Path, nargs="?", help="a second run to compare against")
    p.add_argument("--slo", type=Path, metavar="FILE", help="SLO file (YAML or JSON) to check")
    p.add_argument("--out", type=Path, metavar="FILE", help="where to write the HTML file")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.slo import load_slo
    from harness.report import build_report
    from harness.rundir import RunDir

    run = RunDir(args.run_dir)
    other = RunDir(args.other_run) if args.other_run is not None else None
    slo = load_slo(args.slo) if args.slo is not None else None
    if args.out is not None and not args.out.parent.is_dir():
        raise CommandError(f"--out directory must exist (got {str(args.out.parent)!r})")
    path = build_report(run, other, slo=slo, out=args.out)
    print(path)
    return 0
