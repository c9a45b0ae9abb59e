"""The ``harness`` command: argument parsing and printing only; the library does the work.

Each subcommand lives in ``harness/commands/<name>.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness import __version__
from harness.commands import EXIT_USAGE, command_modules, user_errors


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Load and latency diagnostics for ML model-serving services.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, object] = {}
    for mod in command_modules():
        mod.register(sub)
        handlers[mod.NAME] = mod.handle
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, handlers = build_parser()
    # Everything after "--" belongs to the command itself (e.g. a locustfile's own options).
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    handle = handlers[args.command]
    try:
        return int(handle(args, argv))  # type: ignore[operator]
    except KeyboardInterrupt:
        # Ctrl-C outside a run's own handling (harness run handles its signals itself)
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`harness diagnose RUN | head`): stop quietly, as cat does.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        # Bad input: one line naming the rule and the value (the library's message).
        print(f"harness {args.command}: {exc}", file=sys.stderr)
        return int(getattr(exc, "code", EXIT_USAGE))


if __name__ == "__main__":
    sys.exit(main())
