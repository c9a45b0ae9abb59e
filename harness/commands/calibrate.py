"""`harness calibrate SCENARIO ...`: this host's run-to-run noise, from N back-to-back A/A pairs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.commands import EXIT_USAGE, CommandError
from harness.commands._sessions import ab_options, add_run_arguments, progress, resumed

if TYPE_CHECKING:
    from harness.analysis.compare import NoiseCalibration
    from harness.rundir import RunDir

NAME = "calibrate"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="measure this host's run-to-run noise (N back-to-back A/A pairs)",
        description="Make N pairs of identical runs back to back (2 N runs, as harness ab "
                    "makes them, with the same options on both sides) and store, per request "
                    "name, series and percentile, the standard deviation of log values "
                    "between identical runs (default file: ~/.cache/mlserve-harness/"
                    "noise-HOST.json, which harness compare and harness ab then use for "
                    "runs with the same settings). --from SESSION ... measures it from A/A "
                    "sessions already made instead. Exit 0 stored, 2 bad input or a run "
                    "that could not start (--resume SESSION finishes it).")
    add_run_arguments(p)
    p.add_argument("--pairs", type=int, default=10, help="A/A pairs (default 10)")
    p.add_argument("--noise-file", type=Path, metavar="FILE",
                   help="where to store it (default ~/.cache/mlserve-harness/noise-HOST.json)")
    p.add_argument("--from", type=Path, nargs="+", default=[], dest="sessions",
                   metavar="SESSION", help="A/A sessions (harness ab, or an earlier "
                                           "calibration's) to measure instead of new runs")
    p.add_argument("--resume", type=Path, metavar="SESSION", help="finish a calibration")
    p.add_argument("--percentiles", default="50,90,99", help="default 50,90,99")
    p.add_argument("--json", action="store_true", help="print the stored file")


def _pairs_of(sessions: list[Path]) -> list[tuple[RunDir, RunDir]]:
    """(A_i, B_i) of every round of A/A sessions (both sides with the same options)."""
    from harness.run.ab import read_session
    from harness.rundir import RunDir

    pairs: list[tuple[RunDir, RunDir]] = []
    for path in sessions:
        s = read_session(path)
        a, b = dict(s.sides.get("A") or {}), dict(s.sides.get("B") or {})
        a.pop("label", None)
        b.pop("label", None)
        if a != b:
            raise CommandError(f"{path} is not an A/A session: its sides differ")
        usable = {(r.round, r.side): path / r.dir for r in s.runs
                  if r.status in ("complete", "degraded")}
        pairs += [(RunDir(usable[(k, "A")]), RunDir(usable[(k, "B")]))
                  for k in range(1, s.runs_per_side + 1)
                  if (k, "A") in usable and (k, "B") in usable]
    return pairs


def _make_pairs(args: argparse.Namespace, argv: list[str]) -> list[Path]:
    from harness.run.ab import AbError, run_ab

    if args.resume is not None:
        run_args, run_argv = resumed(args.resume)
    else:
        run_args, run_argv = args, argv
        for side in ("side_a", "side_b", "label_a", "label_b"):
            setattr(run_args, side, "" if side.startswith("side") else "A/A")
        run_args.runs = args.pairs
    opts = ab_options(run_args, run_argv)
    print(f"{args.pairs} A/A pairs: {2 * opts.runs} runs, about "
          f"{opts.estimated_s() / 60:.0f} min of load", file=sys.stderr, flush=True)
    try:
        session = run_ab(opts, on_run=progress(2 * opts.runs), resume=args.resume)
    except AbError as exc:
        raise CommandError(f"{exc}; finish it: harness calibrate --resume "
                           f"{exc.session_dir}") from None
    print(f"session: {session.path}", file=sys.stderr)
    return [session.path]


def detectable(sigma: float, pairs: int, k: int, family: int, alpha: float = 0.05,
               power: float = 0.9) -> float:
    """The smallest B/A - 1 that K rounds find ``power`` of the time after Holm over
    ``family`` comparisons (the first step's alpha / family, two-sided): (t_crit + t_power)
    * sigma * sqrt(2 / K) on the log scale, t on pairs + K - 1 degrees of freedom (``pairs``:
    the calibration's degrees of freedom for the metric, ``NoiseCalibration.df``)."""
    from scipy import stats as sps

    df = pairs + k - 1
    t = float(sps.t.ppf(1 - alpha / (2 * family), df) + sps.t.ppf(power, df))
    return math.exp(t * sigma * math.sqrt(2.0 / k)) - 1.0


def format_noise(cal: NoiseCalibration, path: Path) -> list[str]:
    m = max(1, len(cal.noise.sigma))
    load = cal.settings.get("load") or {}
    what = f"{load.get('duration_s')} s runs of {Path(str(cal.settings.get('scenario'))).name}"
    lines = [f"run-to-run noise of {cal.noise.host or 'this host'}: {cal.pairs} A/A pairs "
             f"({what}), {m} metrics; stored in {path}",
             "sigma: how much a run's value varies between identical back-to-back runs (never "
             "taken below 5 %); "
             "K=1, K=3, K=10: the smallest slowdown (B/A - 1) that K runs per side find 9 "
             f"times in 10, after Holm over {m} comparisons", "",
             f"{'metric':<48} {'sigma':>7} {'K=1':>9} {'K=3':>9} {'K=10':>9}"]
    for key in sorted(cal.noise.sigma):
        s = cal.sigma(key) or 0.0
        found = [detectable(s, cal.key_df(key), k, m) * 100 for k in (1, 3, 10)]
        lines.append(f"{key[:48]:<48} {s * 100:6.1f}%"
                     + "".join(f" {f:+8.0f}%" if f < 1000 else f" {'>1000':>8}%"
                               for f in found))
    return lines


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.analysis.compare import default_noise_path, measure_noise, write_noise
    from harness.commands._judging import parse_percentiles

    percentiles = parse_percentiles(args.percentiles)
    if args.sessions and (args.scenario is not None or args.resume is not None):
        raise CommandError("--from measures existing sessions: give no scenario or --resume")
    if not args.sessions and not 2 <= args.pairs <= 50:
        raise CommandError(f"--pairs must be between 2 and 50 (got {args.pairs})")
    try:
        sessions = args.sessions or _make_pairs(args, argv)
    except ValueError as exc:
        print(f"harness calibrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cal = measure_noise(_pairs_of(sessions), percentiles)
    path = args.noise_file or default_noise_path(cal.noise.host or None)
    write_noise(cal, path)
    if args.json:
        print(json.dumps(cal.to_dict(), indent=2))
    else:
        for line in format_noise(cal, path):
            print(line)
    return 0
