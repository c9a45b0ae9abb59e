"""The run's clock: epoch seconds that never jump, for every timestamp that measures time.

A run directory holds epoch seconds (``run.json`` timeline, interval starts, resource
samples), and the same numbers measure durations: intended starts against actual starts,
interval boundaries, the planned end. ``time.time()`` follows the wall clock, which NTP,
an operator or a VM resume may step at any moment: stepped +5 s mid-run, every open-model
task looked 5 s late (a 1 ms target's corrected p50 read 1.6 s); stepped -1 h, the pacer
slept an hour and the run never ended.

:func:`now` is one wall-clock anchor plus ``time.monotonic()`` offsets: epoch seconds
for the files (labels, within the anchor's accuracy), a monotonic clock for durations.
CLOCK_MONOTONIC is shared by every process of a Linux machine, so a process started by
another can adopt its parent's anchor (:func:`adopt`) and both stamp the same instants
with the same numbers even when the wall clock stepped between their starts. Processes
on other hosts keep their own anchor (their wall clocks must be synchronised, as for any
distributed latency measurement).

Import-safe and cheap: the load driver, the orchestrator and the collectors use it.
"""

from __future__ import annotations

import math
import time

__all__ = ["adopt", "now", "offset", "wall_step"]

#: epoch seconds minus monotonic seconds at the anchor
_offset: float = time.time() - time.monotonic()


def now() -> float:
    """Epoch seconds from the anchor on, advancing with the monotonic clock."""
    return _offset + time.monotonic()


def offset() -> float:
    """The anchor (epoch minus monotonic seconds), to hand to a child process."""
    return _offset


def adopt(anchor: float) -> None:
    """Use another process's anchor (:func:`offset`) on this machine."""
    global _offset
    if isinstance(anchor, bool) or not isinstance(anchor, (int, float)) \
            or not math.isfinite(anchor):
        raise ValueError(f"clock anchor must be a finite number of seconds (got {anchor!r})")
    _offset = float(anchor)


def wall_step() -> float:
    """How far the wall clock moved away from this clock since the anchor (s; 0 when no
    one stepped it)."""
    return time.time() - now()
