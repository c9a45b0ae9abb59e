"""`harness check RUN --slo FILE`: decide a run against an SLO (exit 0 pass, 1 fail, 2 other)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands import CommandError, print_result

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
    from harness.rundir import RunDir

    slo = load_slo(args.slo)
    result = check(RunDir(args.run_dir), slo, args.confidence,
                   ignore_self_check=args.ignore_self_check)
    if args.junit is not None:
        try:
            args.junit.write_text(junit_xml(result), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {args.junit}: {exc.strerror}") from None
    print_result(result, args.json, format_slo_result)
    return result.exit_code
