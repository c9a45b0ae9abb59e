"""`harness worker`: a load generator on another host, joining a `harness run` master.

    harness worker --master 10.0.0.5:5557 [--locustfile scenarios/production.py]

The worker says hello to the master (harness/load/handshake.py): a master of another
harness version (or Locust minor version) refuses it, with both versions in the message;
it takes the master's locustfile unless given one; it measures its clock against the
master's and moves to it. Then it runs its share of one run and exits.

Exit codes: 0 the run ended, 2 bad input or refused by the master (another version),
3 the master did not answer within --connect-timeout or the worker could not connect.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness.commands import CommandError

NAME = "worker"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="generate load for a `harness run --remote-workers` master on another host",
        description="Join the master of a distributed `harness run` (--workers N "
        "--remote-workers M) as one of its workers, run its share of the load, and exit.",
    )
    p.add_argument("--master", required=True, metavar="HOST:PORT",
                   help="the master's address, as `harness run` printed it (port 5557 "
                        "unless --master-bind said otherwise)")
    p.add_argument("--locustfile", type=Path,
                   help="this host's copy of the locustfile (default: the master's, sent "
                        "over; a locustfile that imports files of its own needs them here)")
    p.add_argument("--connect-timeout", default="60s",
                   help="how long to wait for the master to answer (default 60s)")


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.run.options import master_address
    from harness.units import parse_duration

    host, port = master_address(args.master)  # ValueError: one line, exit 2
    timeout = parse_duration(args.connect_timeout, what="connect timeout")
    if not 0 < timeout <= 3600:
        raise CommandError(f"--connect-timeout must be > 0 and <= 3600 s "
                           f"(got {args.connect_timeout!r})")
    command = [sys.executable, "-m", "harness.load.driver", "--worker", "--master-host", host,
               "--master-port", str(port), "--connect-timeout", repr(timeout),
               "--name", "harness worker"]
    if args.locustfile is not None:
        if not args.locustfile.is_file() or args.locustfile.suffix != ".py":
            raise CommandError(f"--locustfile must be an existing .py locustfile "
                               f"(got {str(args.locustfile)!r})")
        command += ["--locustfile", str(args.locustfile.resolve())]
    print(f"harness worker: joining the master at {host}:{port}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # The driver's worker is this process from now on: signals reach it directly.
    os.execv(sys.executable, command)
    return 0  # not reached
