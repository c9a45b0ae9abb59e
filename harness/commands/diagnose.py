"""`harness diagnose RUN [--baseline RUN] [--json]`: ranked findings with their evidence.

Findings are information, not failure: the exit code is 0 whatever they say; 2 when
a run directory cannot be read. diagnosis.json is written into RUN.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands import print_result

NAME = "diagnose"


def register(sub: Any) -> None:
    s = sub.add_parser("diagnose", help="ranked findings: where did the time go, and why")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--baseline", type=Path, default=None,
                   help="a comparable earlier run: findings about what changed")
    s.add_argument("--json", action="store_true", help="print diagnosis.json")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.diagnosis.engine import diagnose, format_diagnosis, write_diagnosis
    from harness.rundir import RunDir

    run = RunDir(args.run_dir)
    baseline = RunDir(args.baseline) if args.baseline is not None else None
    result = diagnose(run, baseline)
    write_diagnosis(result, run.path)
    print_result(result, args.json, format_diagnosis)
    return 0
