"""`harness record`: make a replay file (docs/scenarios.md) from a service's recording
directory or from an access log, for `scenarios/replay.py`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "record"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "record",
        help="make a replay file from recorded traffic or an access log",
        description="Make a replay file (JSONL, docs/scenarios.md) for scenarios/replay.py.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--merge", metavar="DIR", type=Path,
                     help="a recording directory (REFSVC_RECORD_TRAFFIC / --record-traffic)")
    src.add_argument("--from-access-log", metavar="FILE", type=Path,
                     help="an nginx/Apache combined or common access log")
    p.add_argument("-o", "--output", type=Path, required=True, help="the replay file to write")
    p.add_argument("--spread", choices=["even", "burst"], default="even",
                   help="access log: place a second's requests evenly in it, or together")
    p.add_argument("--body", action="append", default=[], metavar="PATH=FILE",
                   help="access log: the body to send for requests to PATH (repeatable)")
    p.add_argument("--path-prefix", help="access log: keep only paths starting with this")


def _bodies(items: list[str]) -> dict[str, bytes]:
    bodies: dict[str, bytes] = {}
    for item in items:
        path, sep, file = item.partition("=")
        if not sep or not path.startswith("/") or not file:
            raise ValueError(f"--body must be /PATH=FILE (got {item!r})")
        try:
            bodies[path] = Path(file).read_bytes()
        except OSError as exc:
            raise ValueError(f"--body file {file!r} cannot be read: {exc.strerror}") from None
    return bodies


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.rundir.replay import convert_access_log_file, merge_directory

    if args.merge is not None:
        n = merge_directory(args.merge, args.output)
        print(f"{n} requests from {args.merge} written to {args.output}")
        return 0
    report = convert_access_log_file(
        args.from_access_log, args.output, spread=args.spread,
        bodies=_bodies(args.body) or None, path_prefix=args.path_prefix,
    )
    for line in report.lines_out():
        print(line)
    print(f"written to {args.output}")
    return 0
