"""The capacity sweep's data: its options, its steps, its result, and the knee of its curve.

Latencies in µs (client, from the intended start); rates in requests/s. The steps and the
result are capacity.json's record (harness.rundir.records.capacity, where its reader is
too), re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.analysis.slo import Slo
from harness.run.options import RunOptions
from harness.rundir.records.capacity import (
    CapacityResult,
    CapacityStep,
    CurvePoint,
    StepObjective,
)

__all__ = ["CapacityError", "CapacityOptions", "CapacityResult", "CapacityStep",
           "CurvePoint", "StepObjective", "knee_index"]


class CapacityError(Exception):
    """The sweep could not run (the target did not start, a step could not start)."""


@dataclass(frozen=True)
class CapacityOptions:
    """A sweep: ``template`` is the run of every step (its rate, out and duration are set
    per step); the rest steers the search. Checked when built. ``max_steps`` includes
    the re-tests of the bracket's ends: 2 steps per confirmation typically, 4 at most."""

    template: RunOptions
    slo: Slo
    start_rps: float = 10.0
    min_rps: float = 1.0
    max_rps: float = 5000.0
    tolerance: float = 0.05
    max_steps: int = 16
    step_s: float = 8.0
    warmup_s: float = 2.0
    out: Path = Path("runs")

    def __post_init__(self) -> None:
        if not 0 < self.min_rps <= self.start_rps <= self.max_rps:
            raise ValueError(f"rates must satisfy 0 < min <= start <= max (got min "
                             f"{self.min_rps!r}, start {self.start_rps!r}, max {self.max_rps!r})")
        if not 0.001 <= self.tolerance <= 0.5:
            raise ValueError(f"tolerance must be in [0.001, 0.5] (got {self.tolerance!r})")
        if not 1 <= self.max_steps <= 100:
            raise ValueError(f"max_steps must be in [1, 100] (got {self.max_steps!r})")
        if not self.step_s > 0 or self.warmup_s < 0:
            raise ValueError(f"step must be > 0 s and warm-up >= 0 s (got {self.step_s!r}, "
                             f"{self.warmup_s!r})")
        # The recorder's intervals start with the load, and one that begins in the warm-up is
        # all warm-up: a warm-up of 0.5 intervals measured latency and requests over the last
        # 1.5 s of a 2 s step but the schedule over 2 s (target 6.67 req/s for 4 asked).
        intervals = self.warmup_s / self.template.interval_s
        if abs(intervals - round(intervals)) > 1e-6:
            raise ValueError(f"warm-up must be a whole number of intervals "
                             f"({self.template.interval_s:g} s) (got {self.warmup_s!r} s)")


def knee_index(xs: list[float], ys: list[float]) -> int | None:
    """Kneedle's knee of an increasing, convex latency-vs-throughput curve.

    Both axes are scaled to [0, 1]; the knee is the point farthest below the chord
    from the first to the last point (where latency starts to climb faster than
    throughput). None with fewer than 3 points or a flat curve.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length (got {len(xs)}, {len(ys)})")
    if len(xs) < 3:
        return None
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    x0, x1 = xs[order[0]], xs[order[-1]]
    y0, y1 = min(ys), max(ys)
    if x1 <= x0 or y1 <= y0:
        return None
    best, best_gap = None, 0.0
    for i in order:
        gap = (xs[i] - x0) / (x1 - x0) - (ys[i] - y0) / (y1 - y0)
        if gap > best_gap:
            best, best_gap = i, gap
    return best
