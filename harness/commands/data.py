"""`harness data RUN [--baseline RUN]`: input drift, data quality and prediction shift."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands import print_result

NAME = "data"

#: exit code when a data problem was found (drift, null rise, prediction shift...)
EXIT_DATA_PROBLEM = 1


def register(sub: Any) -> None:
    s = sub.add_parser(
        "data", help="check the run's traffic and predictions against the training "
        "reference or a baseline run (drift, nulls, prediction shift)")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--baseline", type=Path, default=None,
                   help="compare with this run instead of the training reference")
    s.add_argument("--reference", type=Path, default=None,
                   help="reference_stats.json or the artifacts directory holding it "
                   "(default: $REFSVC_ARTIFACTS or ./artifacts)")
    s.add_argument("--traffic", type=Path, default=None,
                   help="a replay file or directory to check instead of RUN/traffic")
    s.add_argument("--no-store-join", action="store_true",
                   help="check request-sent features only (do not join store features)")
    s.add_argument("--json", action="store_true", help="print data.json")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.data.report import check_run, format_data_report, write_data_report

    report = check_run(args.run_dir, args.baseline, reference=args.reference,
                       traffic=args.traffic, join=not args.no_store_join)
    write_data_report(report, args.run_dir)
    print_result(report, args.json, format_data_report)
    # One drifted feature in twenty is chance at p < 0.05: only the dataset verdict counts.
    quality = any(p != "drift" for f in report.features for p in f.problems)
    problem = quality or bool(report.dataset_drift) \
        or any(p.shifted for p in report.predictions) or bool(report.missing_features) \
        or bool(report.null_features)
    return EXIT_DATA_PROBLEM if problem else 0
