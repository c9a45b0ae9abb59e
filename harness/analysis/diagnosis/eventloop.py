"""The event loop of an async service, read from its profile: how much of the time the loop
thread ran callbacks, sat idle waiting for I/O, or was blocked inside a callback.

An asyncio (or uvloop) service serves every request of a process on one thread. In py-spy's
stacks that thread is the one under the loop's driver (``asyncio/runners.py``,
``base_events.run_forever`` / ``_run_once``); a sample whose leaf is the driver itself or the
selector's poll is the loop waiting for work (idle), any deeper leaf is a callback running:
a request's code. The wall view (``--profile-wall``) samples the thread whatever it does;
the on-CPU view only when it runs (or is runnable). Both views sample at the same rate over
the same window, so a callback's wall samples beyond its on-CPU samples are time the loop
spent *off* the CPU inside a callback: a synchronous call (``time.sleep``, a blocking Redis,
SQLite or HTTP client) during which the loop serves nothing. Awaited I/O leaves no stack at
all (the coroutine is suspended and the loop idles), so it never counts as blocked.

Pure functions of collapsed stacks (``harness.rundir.stacks``); ``loop_facts`` per process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.analysis.rules.thresholds import LOOP_LEAF_MIN, LOOP_OFFCPU_RATIO
from harness.rundir.stacks import Frame, Stack

__all__ = ["LoopFacts", "is_own_code", "loop_facts"]

_PID = re.compile(r"^process (\d+)")
_DRIVER_FUNCS = {"run_forever", "run_until_complete", "_run_once"}
# Interpreter and library locations: a frame outside them is the service's own code.
_LIBRARY = re.compile(r"/(site|dist)-packages/|/lib/python\d+\.\d+/|^<")


def is_own_code(file: str | None) -> bool:
    """A frame of the service's own code: a .py file outside site-packages and the standard
    library (py-spy's ``--full-filenames`` paths; ``<frozen ...>`` is the interpreter)."""
    return bool(file) and str(file).endswith(".py") and not _LIBRARY.search(str(file))


def _is_driver(frame: Frame) -> bool:
    file = frame.file or ""
    if file.endswith("asyncio/runners.py"):
        return True
    short = frame.function.rsplit(".", 1)[-1]
    return file.endswith("asyncio/base_events.py") and (
        frame.function in _DRIVER_FUNCS or short in _DRIVER_FUNCS)


def _is_idle_leaf(frame: Frame) -> bool:
    return _is_driver(frame) or (frame.file or "").endswith("selectors.py")


@dataclass(frozen=True)
class LoopFacts:
    """One process's event-loop thread over the profile window, in samples.

    ``view`` is ``wall`` when the wall view was recorded (then ``ticks`` are the loop
    thread's wall samples and ``blocked`` is known) or ``oncpu`` (``ticks`` = rate x
    window, ``blocked`` None: an on-CPU profile cannot see a thread that sleeps).
    """

    pid: int | None
    view: str
    ticks: int
    #: callback samples on-CPU (running or runnable: py-spy counts a preempted thread)
    busy: int
    #: callback samples in the wall view beyond the on-CPU ones: off-CPU inside a callback
    blocked: int | None
    #: the callback leaf frames with the most off-CPU samples: (frame as py-spy wrote it,
    #: samples), most first
    blockers: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.ticks < 0 or self.busy < 0 or (self.blocked is not None and self.blocked < 0):
            raise ValueError(f"loop sample counts must be >= 0 (got ticks {self.ticks}, busy "
                             f"{self.busy}, blocked {self.blocked})")

    @property
    def busy_share(self) -> float:
        """Share of the time the loop ran (or was ready to run) request code."""
        return min(1.0, self.busy / self.ticks) if self.ticks else 0.0

    @property
    def blocked_share(self) -> float | None:
        if self.blocked is None:
            return None
        return min(1.0, self.blocked / self.ticks) if self.ticks else 0.0

    @property
    def idle_share(self) -> float:
        return max(0.0, 1.0 - self.busy_share - (self.blocked_share or 0.0))


def _pid(stack: Stack) -> int | None:
    procs = [f for f in stack.frames if f.is_process]
    match = _PID.match(procs[-1].function) if procs else None
    return int(match.group(1)) if match else None


def _callbacks(stacks: Iterable[Stack]) -> dict[int | None, tuple[int, dict[str, int]]]:
    """Per process: (loop-thread samples, callback samples per leaf frame)."""
    out: dict[int | None, tuple[int, dict[str, int]]] = {}
    for stack in stacks:
        frames = [f for f in stack.frames if not f.is_process]
        if not frames or not any(_is_driver(f) for f in frames):
            continue  # another thread (a pool worker, the exporter) or no Python frame
        pid = _pid(stack)
        total, leaves = out.get(pid, (0, {}))
        if not _is_idle_leaf(frames[-1]):
            leaves[frames[-1].text] = leaves.get(frames[-1].text, 0) + stack.count
        out[pid] = (total + stack.count, leaves)
    return out


def loop_facts(oncpu: Iterable[Stack], wall: Iterable[Stack] | None, expected_ticks: int
               ) -> list[LoopFacts]:
    """The loop thread of every process that has one, from the on-CPU stacks and (when
    recorded) the wall stacks; ``expected_ticks`` = rate x window (the on-CPU view's ticks).

    Blocked samples are counted per callback leaf frame (``function (file:line)``): a frame
    the wall view sees at least ``LOOP_LEAF_MIN`` times and the on-CPU view at most
    ``LOOP_OFFCPU_RATIO`` as often sleeps there (a ``time.sleep`` line: 127 wall, 9 on-CPU).
    Computing frames on a CPU-contended machine also lose some on-CPU samples (the two
    py-spy processes look at different moments of a preempted thread: 16 % of a clean
    FastAPI run's callback samples overall), but spread over every frame at ratios of
    0.7-0.9, so judging the frame rather than the total keeps that noise out.
    """
    cpu = _callbacks(oncpu)
    walls = _callbacks(wall) if wall is not None else None
    out = []
    for pid in sorted(set(cpu) | set(walls or {}), key=lambda p: -1 if p is None else p):
        busy_leaves = cpu.get(pid, (0, {}))[1]
        busy = sum(busy_leaves.values())
        if walls is None:
            out.append(LoopFacts(pid, "oncpu", max(expected_ticks, busy), busy, None))
            continue
        ticks, wall_leaves = walls.get(pid, (0, {}))
        if not ticks:
            continue
        per = {k: n - busy_leaves.get(k, 0) for k, n in wall_leaves.items()
               if n >= LOOP_LEAF_MIN and busy_leaves.get(k, 0) <= LOOP_OFFCPU_RATIO * n}
        blockers = tuple(sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(LoopFacts(pid, "wall", ticks, min(busy, ticks),
                             min(sum(per.values()), ticks), blockers[:3]))
    return out
