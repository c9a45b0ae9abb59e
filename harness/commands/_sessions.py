"""Making sessions of runs for the commands that make them (ab, calibrate, versions): the
run flags, the two sides' options, progress lines, resuming a session from its index.

Not a command (the leading underscore keeps ``command_modules`` from loading it).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.commands import CommandError
from harness.commands.run import (
    _add_collector_flags,
    _add_load_flags,
    _add_serve_flags,
    run_options,
    when_used,
)

if TYPE_CHECKING:
    from harness.run import RunOptions
    from harness.run.ab import AbOptions, AbRun, AbSession

__all__ = ["COMMANDS", "ab_options", "add_run_arguments", "add_side_flags", "progress",
           "resumed"]

COMMANDS = ("ab", "calibrate")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What ``harness run`` takes (the scenario optional: ``--resume`` needs none)."""
    p.add_argument("scenario", type=Path, nargs="?", help="a locustfile")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="URL", help="load a running service at URL")
    where.add_argument("--serve", choices=["reference"],
                       help="start the reference service for each run")
    p.add_argument("--target-remote", action="store_true",
                   help="the --target runs on another host (harness run --target-remote)")
    _add_load_flags(p.add_argument_group("load model (closed: --users; open: --rate)"))
    _add_serve_flags(p.add_argument_group("--serve reference options"))
    p.add_argument("--out", type=Path, default=Path("runs"), help="where the session goes")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="label every run (repeatable)")
    when_used(p, _add_collector_flags)


def _side_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness ab --a/--b", add_help=False, exit_on_error=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="URL")
    where.add_argument("--serve", choices=["reference"])
    p.add_argument("--target-remote", action="store_true")
    _add_load_flags(p.add_argument_group())
    _add_serve_flags(p.add_argument_group())
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    _add_collector_flags(p)
    return p


def _side(base: argparse.Namespace, text: str, argv: list[str], which: str) -> RunOptions:
    """The base options with the side's own ``text`` parsed over them."""
    words = shlex.split(text)
    extra: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, extra = words[:cut], words[cut + 1:]
    ns = copy.deepcopy(base)
    try:
        ns, unknown = _side_parser().parse_known_args(words, namespace=ns)
    except argparse.ArgumentError as exc:
        raise CommandError(f"--{which}: {exc}") from None
    if unknown:
        raise CommandError(f"--{which}: not an option of harness run here: {unknown[0]!r} "
                           "(locustfile options go after -- inside the quotes)")
    if "--target" in words:
        ns.serve = None
    elif "--serve" in words:
        ns.target = None
    ns.passthrough = [*base.passthrough, *extra]
    return run_options(ns, argv)


def ab_options(args: argparse.Namespace, argv: list[str]) -> AbOptions:
    """AbOptions from the parsed arguments; ValueError or CommandError names the bad one."""
    from harness.run.ab import AbOptions

    if args.scenario is None:
        raise CommandError("give a scenario (a locustfile), or --resume SESSION")
    if args.target is None and args.serve is None and not any(
            w in shlex.split(args.side_a) + shlex.split(args.side_b)
            for w in ("--target", "--serve")):
        raise CommandError("give --target URL or --serve reference (common, or per side)")
    a, b = _side(args, args.side_a, argv, "a"), _side(args, args.side_b, argv, "b")
    labels = (args.label_a or args.side_a.strip() or "A", args.label_b or args.side_b.strip()
              or "B")
    command = ["harness", *argv] + (["--", *args.passthrough] if args.passthrough else [])
    return AbOptions(a=a, b=b, runs=args.runs, out=args.out, labels=labels,
                     command_line=tuple(command))


def progress(total: int) -> Any:
    def on_run(run: AbRun, session: AbSession) -> None:
        print(f"run {run.side}{run.round} ({len(session.runs)}/{total}): {run.status}, "
              f"{run.elapsed_s:.0f} s  {run.dir}", file=sys.stderr, flush=True)
    return on_run


def add_side_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--a", default="", dest="side_a", metavar="OPTIONS",
                   help="options of side A (harness run's), quoted")
    p.add_argument("--b", default="", dest="side_b", metavar="OPTIONS",
                   help="options of side B (harness run's), quoted")
    p.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--label-a", help="what A is (default: its options)")
    p.add_argument("--label-b", help="what B is (default: its options)")


def resumed(path: Path) -> tuple[argparse.Namespace, list[str]]:
    """The run and side arguments a session was started with (the command line in its
    ab.json, of harness ab or harness calibrate), to finish it; argv as the command's."""
    from harness.run.ab import read_session

    session = read_session(path)
    stored = list(session.command_line[1:])
    if not stored or stored[0] not in COMMANDS:
        raise CommandError(f"{path}: its index holds no harness ab or calibrate command "
                           "line to resume")
    passthrough: list[str] = []
    if "--" in stored:
        cut = stored.index("--")
        stored, passthrough = stored[:cut], stored[cut + 1:]
    parser = argparse.ArgumentParser(prog=f"harness {stored[0]}", add_help=False)
    add_run_arguments(parser)
    add_side_flags(parser)
    parser.add_argument("--pairs", type=int, default=None)
    parsed, _ = parser.parse_known_args(stored[1:])  # the comparison's flags are not needed
    if stored[0] == "calibrate":
        parsed.side_a = parsed.side_b = ""
        parsed.label_a = parsed.label_b = "A/A"
        parsed.runs = parsed.pairs or 10
    parsed.passthrough = passthrough
    return parsed, stored
