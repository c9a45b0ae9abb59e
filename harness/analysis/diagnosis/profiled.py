"""The py-spy profile as the diagnosis reads it: samples per stage of the stage map (on-CPU,
waits apart), the hottest functions per stage, every function's own samples, and the event
loop of an async service (``eventloop``). Read from ``profile/stages.json`` (written by the
profile collector with its stage map), ``profile/status.json`` and the collapsed stacks.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.analysis.diagnosis.eventloop import LoopFacts, is_own_code, loop_facts
from harness.rundir import RunDir
from harness.rundir.records import ProfileStatus
from harness.rundir.stacks import Stack, parse_collapsed

__all__ = ["ProfileFacts", "own_functions", "read_profile"]

MAX_COLLAPSED_BYTES = 64 * 2**20  # py-spy writes ~1 MB per minute per process at 20 Hz


@dataclass(frozen=True)
class ProfileFacts:
    """The py-spy profile as the rules need it: samples per stage and per function."""

    samples: int
    rate_hz: float
    window_s: float
    #: on-CPU samples per stage of the stage map (``other`` and ``framework`` included)
    oncpu: dict[str, int] = field(default_factory=dict)
    #: wall view: fraction of a stage's samples spent waiting (I/O, locks); empty without it
    waiting: dict[str, float] = field(default_factory=dict)
    #: per stage, the functions most often running themselves: [(function, samples)]
    top_self: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    #: self (leaf) samples per function over the whole on-CPU profile
    functions: dict[str, int] = field(default_factory=dict)
    lag_warnings: int = 0
    #: the stage map's name (``python_web``, ``reference_service``...), when recorded
    stage_map: str | None = None
    #: the views recorded: ``oncpu``, and ``wall`` with --profile-wall
    views: tuple[str, ...] = ("oncpu",)
    #: on-CPU samples per stage without those whose leaf is a wait (a lock, a poll): what
    #: the service computes (py-spy's blocking mode counts some idle threads as running)
    running: dict[str, int] = field(default_factory=dict)
    #: the event loop of each async process (empty for a service without one)
    loops: tuple[LoopFacts, ...] = ()

    @property
    def running_total(self) -> int:
        return sum(self.running.values())

    def running_share(self, stage: str) -> float:
        total = self.running_total
        return self.running.get(stage, 0) / total if total else 0.0


def own_functions(p: ProfileFacts, stages: tuple[str, ...] = ("own_code", "other")
                  ) -> list[tuple[str, str, int]]:
    """(stage, function, samples) of the hottest functions in the service's own files
    (outside site-packages and the standard library), most first."""
    out = []
    for stage in stages:
        for fn, n in p.top_self.get(stage, []):
            if is_own_code(_split_key(fn)[1]):
                out.append((stage, fn, n))
    return sorted(out, key=lambda t: -t[2])


def _stacks(rd: RunDir, view: str) -> list[Stack] | None:
    path = rd.path / "profile" / f"{view}.collapsed"
    try:
        if not path.is_file() or path.stat().st_size > MAX_COLLAPSED_BYTES:
            return None
        return parse_collapsed(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        rd.warnings.append(f"profile/{view}.collapsed is unreadable or malformed ({exc}); "
                           "ignored")
        return None


def _split_key(key: str) -> tuple[str, str]:
    """(function, file) of a function key ``function (file)``."""
    if key.endswith(")") and " (" in key:
        i = key.rfind(" (")
        return key[:i], key[i + 2:-1]
    return key, ""


def _wait_rule(rule: Mapping[str, Any]) -> Any:
    """A predicate on function keys from one of the stage map's wait rules (the matchers of
    harness/run/collectors/stagemap.py: file and function globs, regexes searched)."""
    try:
        file_re = re.compile(rule["file_regex"]) if rule.get("file_regex") else None
        func_re = re.compile(rule["function_regex"]) if rule.get("function_regex") else None
    except (re.error, TypeError):
        return lambda key: False

    def matches(key: str) -> bool:
        func, file = _split_key(key)
        path = file if file.startswith("/") else "/" + file
        short = func.rsplit(".", 1)[-1]
        if rule.get("file") and not fnmatch.fnmatchcase(path, str(rule["file"])):
            return False
        if file_re is not None and not file_re.search(path):
            return False
        glob = rule.get("function")
        if glob and not (fnmatch.fnmatchcase(func, str(glob))
                         or fnmatch.fnmatchcase(short, str(glob))):
            return False
        return func_re is None or bool(func_re.search(func))
    return matches


def _detail(stages: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[tuple[str, int]]],
                                              dict[str, int]]:
    detail = stages.get("detail") or {}
    waiting: dict[str, float] = {}
    for name, st in ((detail.get("wall") or {}).get("stages") or {}).items():
        if st.get("samples"):
            waiting[name] = float(st.get("waiting") or 0) / float(st["samples"])
    oncpu = (detail.get("oncpu") or {}).get("stages") or {}
    waits = [_wait_rule(r) for r in (stages.get("map") or {}).get("wait") or []
             if isinstance(r, Mapping)][:200]
    # the hottest functions that compute: a leaf the map calls a wait is an idle thread
    top_self = {name: [(str(t["function"]), int(t["samples"])) for t in st.get("top_self") or []
                       if not any(w(str(t["function"])) for w in waits)]
                for name, st in oncpu.items()}
    running = {name: max(0, int(st.get("samples") or 0) - int(st.get("waiting") or 0))
               for name, st in oncpu.items()}
    return waiting, top_self, running


def read_profile(rd: RunDir) -> ProfileFacts | None:
    """The run's profile facts, or None when it has no usable profile."""
    raw = rd.profile_status()
    status = None if raw is None else ProfileStatus.from_dict(raw)
    if status is None or not status.ok:
        return None
    stages = rd.read_json("profile/stages.json") or {}
    waiting, top_self, running = _detail(stages)
    oncpu = {k: int(v) for k, v in (stages.get("oncpu") or {}).items()}
    on_stacks = _stacks(rd, "oncpu") or []
    functions: dict[str, int] = {}
    for stack in on_stacks:
        if stack.leaf is not None:
            functions[stack.leaf.key] = functions.get(stack.leaf.key, 0) + stack.count
    views = tuple(v for v in ("oncpu", "wall") if isinstance(stages.get(v), dict)) \
        or tuple(str(v) for v in (raw or {}).get("views") or ("oncpu",))
    wall = _stacks(rd, "wall") if "wall" in views else None
    window = max(0.0, float(status.window_s))
    rate = float(status.rate_hz or 0.0)
    loops = tuple(loop_facts(on_stacks, wall, int(rate * window)))
    smap = (stages.get("map") or {}).get("name")
    return ProfileFacts(status.samples, rate, window, oncpu, waiting, top_self, functions,
                        status.lag_warnings, str(smap) if smap else None,
                        views or ("oncpu",), running or dict(oncpu), loops)
