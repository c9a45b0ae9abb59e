"""The package's shape, checked: no import cycle inside harness/, imports flow one way
between its rooms, Locust stays inside the load driver, modules and functions stay small.

The import graph is read from the source (every ``import`` statement, including the ones
inside functions), so a lazy import that hides a cycle from the interpreter is still a
cycle here. docs/internals.md describes the rooms and what each may import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "harness"

# room -> the rooms it may import (besides itself). Order of the layers, bottom up:
# units; stats; rundir; load, run.collectors; analysis (rules < selfcheck < summary <
# slo, data < compare, diagnosis); run; report, exports; commands; cli.
ALLOWED: dict[str, set[str]] = {
    "harness": set(),
    "analysis": set(),
    "units": set(),
    "stats": {"units"},
    "rundir": {"stats", "units"},
    "load": {"rundir", "stats", "units", "harness"},  # harness: __version__ (handshake)
    "run.collectors": {"rundir", "stats", "units"},
    "analysis.rules": {"rundir", "stats", "units"},
    "analysis.selfcheck": {"analysis.rules", "rundir", "stats", "units"},
    "analysis.summary": {"analysis.selfcheck", "analysis.rules", "rundir", "stats", "units"},
    "analysis.slo": {"analysis.summary", "rundir", "stats", "units"},
    "analysis.data": {"analysis.rules", "rundir", "stats", "units"},
    "analysis.compare": {"analysis.slo", "analysis.summary", "rundir", "stats", "units"},
    "analysis.diagnosis": {"analysis.data", "analysis.rules", "analysis.selfcheck",
                           "analysis.summary", "rundir", "stats", "units"},
    "run": {"run.collectors", "load", "analysis.summary", "analysis.slo", "rundir", "stats",
            "units", "harness"},
    "report": {"analysis.compare", "analysis.diagnosis", "analysis.slo", "analysis.summary",
               "analysis.data", "rundir", "stats", "units"},
    "exports": {"analysis.slo", "rundir", "stats", "units"},
    "commands": {"run", "run.collectors", "load", "analysis.compare", "analysis.data",
                 "analysis.diagnosis", "analysis.slo", "analysis.summary", "report",
                 "exports", "rundir", "stats", "units", "harness"},
    "cli": {"commands", "units", "harness"},
}
# Locust monkey-patches the standard library on import: only the driver's modules may.
LOCUST_FREE_IN_LOAD = {"harness.load", "harness.load.config", "harness.load.shapes",
                       "harness.load.schedule", "harness.load.servertiming"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Longer on purpose, each with its reason (docs/internals.md repeats them).
LONG_FUNCTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "harness"
    if parts[1] in ("run", "analysis") and len(parts) > 2:
        if parts[1] == "run" and parts[2] != "collectors":
            return "run"
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def _imports(path: Path, module: str) -> set[str]:
    """Every harness module ``path`` imports, resolved to a module (not a name in it)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            if base.split(".")[0] != "harness":
                continue
            for alias in node.names:  # `from harness import stats` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found - {module}


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state[n] == 1:
                return stack[stack.index(n):] + [n]
            if state[n] == 0 and n in GRAPH and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if state[m] == 0 and (found := visit(m)):
            return found
    return None


def test_every_module_is_in_a_known_room() -> None:
    unknown = sorted({_room(m) for m in MODULES} - set(ALLOWED))
    assert not unknown, f"rooms missing from ALLOWED (and docs/internals.md): {unknown}"


def test_no_import_cycle_inside_harness() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_flow_one_way_between_rooms() -> None:
    wrong = sorted(
        f"{m} imports {n}" for m, deps in GRAPH.items() for n in deps
        if _room(n) != _room(m) and _room(n) not in ALLOWED.get(_room(m), set()))
    assert not wrong, "imports against the layering (docs/internals.md):\n" + "\n".join(wrong)


def test_the_cycle_finder_finds_a_cycle() -> None:
    GRAPH["harness.units"] = GRAPH["harness.units"] | {"harness.stats.quantiles"}
    saved = GRAPH["harness.stats.quantiles"]
    GRAPH["harness.stats.quantiles"] = saved | {"harness.units"}
    try:
        assert _cycle() is not None
    finally:
        GRAPH["harness.units"] -= {"harness.stats.quantiles"}
        GRAPH["harness.stats.quantiles"] = saved


def _imports_locust(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n.split(".")[0] in ("locust", "gevent") for n in names):
            return True
    return False


def test_locust_is_imported_only_by_the_load_driver() -> None:
    offenders = sorted(m for m, p in MODULES.items()
                       if _imports_locust(p) and (not m.startswith("harness.load.")
                                                  or m in LOCUST_FREE_IN_LOAD))
    assert not offenders, f"modules outside the driver that import locust/gevent: {offenders}"
    # and what the rest of the harness imports from harness.load must stay Locust-free
    reach = sorted(f"{m} imports {n}" for m, deps in GRAPH.items() for n in deps
                   if not m.startswith("harness.load") and n.startswith("harness.load")
                   and n not in LOCUST_FREE_IN_LOAD)
    assert not reach, "\n".join(reach)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    path = MODULES[module]
    source = path.read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines (limit {MAX_MODULE_LINES})"
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in LONG_FUNCTIONS:
                long.append(f"{node.name} ({n} lines)")
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
