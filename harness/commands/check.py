"""`harness check RUN --slo FILE`: decide a run against an SLO (exit 0 pass, 1 fail, 2 other)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.commands import EXIT_USAGE

NAME = "check"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="check a run against an SLO file (exit 0 pass, 1 violated, 2 "
                      "inconclusive or invalid run)",
        description="Check a run against an SLO file. Exit codes: 0 pass, 1 an objective is "
                    "violated, 2 inconclusive (too few samples to decide at the confidence), "
                    "invalid run (self-check failed) or unusable input. See docs/slo.md.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--slo", type=Path, required=True, help="SLO file (YAML or JSON)")
    p.add_argument("--confidence", type=float,
                   help="confidence of the bounds (default: the file's, else 0.95)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--ignore-self-check", action="store_true",
                   help="decide even when the run failed its self-check")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.slo import check, format_slo_result, junit_xml, load_slo
    from harness.rundir import RunDir, RunDirError

    try:
        slo = load_slo(args.slo)
        result = check(RunDir(args.run_dir), slo, args.confidence,
                       ignore_self_check=args.ignore_self_check)
    except (RunDirError, OSError, ValueError) as exc:
        print(f"harness check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.junit is not None:
        try:
            args.junit.write_text(junit_xml(result), encoding="utf-8")
        except OSError as exc:
            print(f"harness check: cannot write {args.junit}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in format_slo_result(result):
            print(line)
    return result.exit_code
