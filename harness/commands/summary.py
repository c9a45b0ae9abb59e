"""`harness summary RUN`: print a run's summary table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.commands import EXIT_USAGE

NAME = "summary"


def register(sub: Any) -> None:
    s = sub.add_parser("summary", help="print a run's summary table")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--json", action="store_true", help="print summary.json")
    s.add_argument("--recompute", action="store_true",
                   help="recompute summary.json from the run's raw files")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.summary import format_summary, summarize
    from harness.rundir import RunDirError

    path: Path = args.run_dir
    try:
        summary_file = path / "summary.json"
        if args.recompute or not summary_file.is_file():
            summary = summarize(path)
        else:
            try:
                summary = json.loads(summary_file.read_text())
            except ValueError as exc:  # name the file: a bare JSON error says nothing useful
                raise ValueError(f"{summary_file} is not readable JSON ({exc}); rebuild it from "
                                 f"the raw files with --recompute") from None
    except (RunDirError, OSError, ValueError) as exc:
        print(f"harness summary: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for line in format_summary(summary):
            print(line)
    return 0


