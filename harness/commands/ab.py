"""`harness ab SCENARIO ... --a OPTS --b OPTS --runs K`: K runs per side, A B, B A, ..., judged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands import EXIT_USAGE, CommandError
from harness.commands._judging import add_judging_flags, judging_kwargs, load_noise, print_judged
from harness.commands._sessions import (
    ab_options,
    add_run_arguments,
    add_side_flags,
    progress,
    resumed,
)

NAME = "ab"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ab", help="K runs per side in rounds (A B, B A, ...), then compare the sides",
        description="Make K runs of A and K of B, interleaved in rounds A B, B A, ... "
                    "(each run as harness run makes it; with --serve reference each starts "
                    "its own service), "
                    "in one session directory with an index (ab.json), then compare them "
                    "with the runs as the unit (harness compare SESSION does it again). "
                    "--a and --b hold the options of each side, added to the common ones, "
                    "e.g. --a '--model-version fraud=v1' --b '--model-version fraud=v2', "
                    "--a '--target URL1' --b '--target URL2', --b '--faults slow.yaml', or "
                    "the locustfile's own options after --: --b '-- --model-versions "
                    "fraud=v2' (an option alone needs --a=--no-profile). Exit codes as "
                    "harness compare's; 2 also when a run could not start (--resume DIR "
                    "finishes the session).")
    add_run_arguments(p)
    ab = p.add_argument_group("the two sides")
    add_side_flags(ab)
    ab.add_argument("--resume", type=Path, metavar="SESSION",
                    help="finish a session that stopped, with its own options")
    add_judging_flags(p.add_argument_group("comparison"), control=True)
    p.add_argument("--force", action="store_true",
                   help="judge sides that are not comparable (exit by the verdict)")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.compare import compare_runs
    from harness.run.ab import AbError, run_ab
    from harness.rundir import RunDir

    resume = args.resume
    run_args, run_argv = resumed(resume) if resume is not None else (args, argv)
    kwargs = judging_kwargs(args)
    opts = ab_options(run_args, run_argv)
    if kwargs.get("control") is not None and opts.runs < 2:
        raise CommandError(f"--control needs at least 2 runs per side (got --runs "
                           f"{opts.runs}): the rounds measure what is left after dividing "
                           "by the control")
    print(f"{2 * opts.runs} runs, A B, B A, ..., about {opts.estimated_s() / 60:.0f} min of "
          f"load", file=sys.stderr, flush=True)
    try:
        session = run_ab(opts, on_run=progress(2 * opts.runs), resume=resume)
    except AbError as exc:
        print(f"harness ab: {exc}", file=sys.stderr)
        if exc.session_dir is not None:
            print(f"session (finish it: harness ab --resume {exc.session_dir})",
                  file=sys.stderr)
        return EXIT_USAGE
    a = [RunDir(p) for p in session.run_dirs("A")]
    b = [RunDir(p) for p in session.run_dirs("B")]
    if not a or not b:
        raise CommandError(f"session {session.path} has no usable run on one side "
                           f"({session.reason or session.state})")
    try:
        result = compare_runs(a, b, noise=load_noise(args, a[0]), labels=session.labels,
                              **kwargs)
    except ValueError as exc:  # e.g. --control names no request of the runs: they are kept
        print(f"harness ab: {exc}", file=sys.stderr)
        print(f"session: {session.path} (compare again: harness compare {session.path} ...)",
              file=sys.stderr)
        return EXIT_USAGE
    print_judged(result, args.json)
    print(f"session: {session.path}  ({session.state}; compare again: harness compare "
          f"{session.path})", file=sys.stderr)
    return result.exit_code(force=args.force)
