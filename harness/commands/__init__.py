"""The subcommands of ``harness``: one module each, found by name.

A command module defines ``NAME``, ``register(subparsers)`` (adds its parser) and
``handle(args, argv) -> int`` (runs it, prints, returns the exit code). Command modules
parse and print only; the work is done by the library modules they call.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

EXIT_USAGE = 2


def command_modules() -> list[ModuleType]:
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register") and hasattr(mod, "handle"):
            mods.append(mod)
    return mods
