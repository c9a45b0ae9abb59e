"""`harness summary RUN`: print a run's summary table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.commands import print_result

NAME = "summary"


def register(sub: Any) -> None:
    s = sub.add_parser("summary", help="print a run's summary table")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--json", action="store_true", help="print summary.json")
    s.add_argument("--recompute", action="store_true",
                   help="recompute summary.json from the run's raw files")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.summary import format_summary, summarize
    from harness.rundir import schema_errors

    path: Path = args.run_dir
    summary_file = path / "summary.json"
    if args.recompute or not summary_file.is_file():
        summary = summarize(path)
    else:
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError as exc:  # name the file: a bare JSON error says nothing useful
            raise ValueError(f"{summary_file} is not readable JSON ({exc}); rebuild it from "
                             f"the raw files with --recompute") from None
        problems = schema_errors(summary, "summary") if isinstance(summary, dict) else \
            [f"it is a {type(summary).__name__}, not an object"]
        if problems:
            raise ValueError(f"{summary_file} does not match its schema {problems[0]}; "
                             "rebuild it from the raw files with --recompute")
    print_result(summary, args.json, format_summary)
    return 0


