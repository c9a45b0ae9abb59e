"""`harness compare`: B against A, from one or more runs per side, or two names of one run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands import CommandError
from harness.commands._judging import add_judging_flags, judging_kwargs, load_noise, print_judged

NAME = "compare"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare", help="compare B with A: runs, K runs per side, or two names of one run",
        description="Compare B with A per request name, series and percentile: B/A with an "
                    "interval, Holm's correction over all comparisons, a practical margin "
                    "(--min-effect), and one verdict line per request name. Forms: "
                    "RUN_A RUN_B (one run per side: judged against this host's noise "
                    "calibration, or 'inconclusive' beyond the margin without one); "
                    "--a RUNS --b RUNS, or RUNS -- RUNS, or an ab SESSION directory (K runs "
                    "per side: judged against the spread between runs); RUN --name-a X "
                    "--name-b Y (two request names of one run, interleaved). Exit 0 no "
                    "regression, 1 a regression beyond the margin, 2 inconclusive, not "
                    "comparable (without --force) or bad input.")
    p.add_argument("runs", type=Path, nargs="*",
                   help="RUN_A RUN_B, or one ab session directory, or one run with "
                        "--name-a/--name-b")
    p.add_argument("--a", type=Path, nargs="+", default=[], dest="a_runs", metavar="RUN",
                   help="the runs of side A")
    p.add_argument("--b", type=Path, nargs="+", default=[], dest="b_runs", metavar="RUN",
                   help="the runs of side B")
    p.add_argument("--name-a", help="request name on the A side (e.g. 'predict fraud v1')")
    p.add_argument("--name-b", help="request name on the B side")
    add_judging_flags(p, control=True)
    p.add_argument("--force", action="store_true",
                   help="judge runs that are not comparable (exit by the verdict)")


def _sides(args: argparse.Namespace) -> tuple[list[Path], list[Path], tuple[str, str]]:
    from harness.run.ab import INDEX_FILE, read_session

    given, passthrough = list(args.runs), [Path(p) for p in args.passthrough]
    if args.a_runs or args.b_runs:
        if given or passthrough or not (args.a_runs and args.b_runs):
            raise CommandError("with --a and --b give both, and no other runs")
        return list(args.a_runs), list(args.b_runs), ("A", "B")
    if passthrough:
        if not given:
            raise CommandError("give the A runs before -- and the B runs after it")
        return given, passthrough, ("A", "B")
    if len(given) == 1 and (given[0] / INDEX_FILE).is_file():
        session = read_session(given[0])
        a, b = session.run_dirs("A"), session.run_dirs("B")
        if not a or not b:
            raise CommandError(f"session {given[0]} has no usable run on side "
                               f"{'A' if not a else 'B'} yet (harness ab --resume "
                               f"{given[0]})")
        return a, b, session.labels
    if len(given) != 2:
        raise CommandError(f"give RUN_A RUN_B, --a RUNS --b RUNS, RUNS -- RUNS, an ab "
                           f"session directory, or one run with --name-a/--name-b "
                           f"(got {len(given)} paths)")
    return given[:1], given[1:], ("A", "B")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.compare import compare_names, compare_runs
    from harness.rundir import RunDir

    kwargs = judging_kwargs(args)
    if args.name_a is not None or args.name_b is not None:
        if len(args.runs) != 1 or args.name_a is None or args.name_b is None \
                or args.passthrough or args.a_runs or args.b_runs:
            raise CommandError("two request names need one run, --name-a and --name-b")
        if kwargs.pop("control", None) is not None:
            raise CommandError("--control divides runs by a name of the same runs; two "
                               "request names of one run (--name-a/--name-b) are already "
                               "interleaved on the same machine")
        result = compare_names(RunDir(args.runs[0]), args.name_a, args.name_b, **kwargs)
    else:
        a_paths, b_paths, labels = _sides(args)
        a, b = [RunDir(p) for p in a_paths], [RunDir(p) for p in b_paths]
        result = compare_runs(a, b, noise=load_noise(args, a[0]), labels=labels, **kwargs)
    print_judged(result, args.json)
    if not result.comparable and not args.force:
        print("harness compare: the runs are not comparable (see above); --force to judge "
              "them anyway", file=sys.stderr)
    return result.exit_code(force=args.force)
