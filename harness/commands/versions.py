"""`harness versions --model M --versions v1,v2 ...`: model versions interleaved in one run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.commands import EXIT_USAGE, CommandError
from harness.commands._judging import add_judging_flags, judging_kwargs
from harness.commands._sessions import add_run_arguments

if TYPE_CHECKING:
    from harness.analysis.compare import Judged
    from harness.run import RunResult

NAME = "versions"
SCENARIO = Path(__file__).resolve().parent.parent.parent / "scenarios" / "versions.py"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "versions", help="compare model versions served side by side, in one run",
        description="One run in which every input goes to each version of a model, in "
                    "random order (scenarios/versions.py), so whatever the machine does "
                    "hits all versions alike; then each version against the first (the "
                    "baseline) per series and percentile, with the samples' "
                    "distribution-free intervals, Holm over each pair's comparisons and "
                    "the --min-effect margin: one verdict line per version pair. The "
                    "service must serve every version at once (the reference service "
                    "does: /v1/models/M/versions/V/predict; --path for another layout). "
                    "In the open model --rate counts inputs, each sent to every version. "
                    "Exit 0 no version slower, 1 a version slower beyond the margin, 2 "
                    "inconclusive, a run that could not start or bad input.")
    add_run_arguments(p)
    p.add_argument("--model", required=True, help="the model, e.g. fraud")
    p.add_argument("--versions", default="v1,v2",
                   help="comma-separated; the first is the baseline (default v1,v2)")
    p.add_argument("--path", help="path of one version's predictions, with {model} and "
                                  "{version} (default /v1/models/{model}/versions/{version}/"
                                  "predict)")
    add_judging_flags(p.add_argument_group("comparison"), noise=False)


def _versions(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise CommandError(f"--versions must name at least two different versions (got "
                           f"{text!r})")
    return names


def _run(args: argparse.Namespace, argv: list[str], versions: list[str]) -> RunResult:
    from harness.commands.run import run_options
    from harness.run import RunError, run

    scenario = args.scenario or SCENARIO
    if not scenario.is_file():
        raise CommandError(f"the versions scenario is not here: {scenario} (give a "
                           "locustfile that names requests 'predict MODEL VERSION')")
    if args.target is None and args.serve is None:
        raise CommandError("give --target URL or --serve reference")
    args.scenario = scenario
    args.passthrough = ["--compare-model", args.model, "--compare-versions",
                        ",".join(versions), *(["--compare-path", args.path] if args.path
                                              else []), *args.passthrough]
    options = run_options(args, argv)
    print(f"one run of {options.duration_s:g} s (+ {options.warmup_s:g} s warm-up): "
          f"{args.model} {', '.join(versions)} interleaved", file=sys.stderr, flush=True)
    try:
        return run(options)
    except RunError as exc:
        raise CommandError(f"could not run: {exc}") from None


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.compare import compare_names, format_judged
    from harness.rundir import RunDir

    versions = _versions(args.versions)
    kwargs = judging_kwargs(args)
    result = _run(args, argv, versions)
    rd = RunDir(result.run_dir)
    base = f"predict {args.model} {versions[0]}"
    judged: list[Judged] = [compare_names(rd, base, f"predict {args.model} {v}", **kwargs)
                            for v in versions[1:]]
    if args.json:
        print(json.dumps([j.to_dict() for j in judged], indent=2))
    else:
        for j in judged:
            for line in format_judged(j):
                print(line)
            print()
    print(f"run directory: {result.run_dir}  (status: {result.status})",
          file=sys.stderr if args.json else sys.stdout)
    codes = [j.exit_code() for j in judged]
    return 1 if 1 in codes else (EXIT_USAGE if EXIT_USAGE in codes else 0)
