"""The subcommands of ``harness``: one module each, found by name.

A command module defines ``NAME``, ``register(subparsers)`` (adds its parser) and
``handle(args, argv) -> int`` (runs it, prints, returns the exit code). Command modules
parse and print only; the work is done by the library modules they call.

Errors: a handler raises :class:`CommandError` (or lets the library's own ``ValueError``,
``OSError`` or ``RunDirError`` through, whose messages name the rule and the value);
``harness.cli`` prints one line, ``harness NAME: message``, and exits with the error's
code (``EXIT_USAGE``, 2, unless the error says otherwise). No handler prints a traceback.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

EXIT_USAGE = 2

__all__ = ["EXIT_USAGE", "CommandError", "command_modules", "print_result", "user_errors"]


class CommandError(Exception):
    """A command cannot do what it was asked: one line for stderr, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def user_errors() -> tuple[type[BaseException], ...]:
    """The library's exceptions that mean bad input (a file, a run directory, a value),
    printed as one line by the CLI rather than as a traceback."""
    from harness.rundir import RunDirError

    return (CommandError, RunDirError, OSError, ValueError)


def print_result(result: Any, as_json: bool, lines: Callable[[Any], Iterable[str]]) -> None:
    """``--json``: the result's ``to_dict()`` (or the dict itself), indented; else the
    formatter's lines."""
    if as_json:
        doc = result.to_dict() if hasattr(result, "to_dict") else result
        print(json.dumps(doc, indent=2))
    else:
        for line in lines(result):
            print(line)


def command_modules() -> list[ModuleType]:
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register") and hasattr(mod, "handle"):
            mods.append(mod)
    return mods
