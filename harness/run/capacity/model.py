"""The capacity sweep's data: its options, its steps, its result, and the knee of its curve.

Latencies in µs (client, from the intended start); rates in requests/s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.slo import Slo
from harness.run.options import RunOptions

__all__ = ["CapacityError", "CapacityOptions", "CapacityResult", "CapacityStep",
           "CurvePoint", "knee_index"]


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


@dataclass(frozen=True)
class CapacityStep:
    """One run of the sweep; latencies in µs (client, from the intended start)."""

    index: int
    phase: str  # "coarse", "bisect" or "confirm" (a re-test of one of the bracket's ends)
    rate_rps: float
    run_dir: str
    verdict: str
    achieved_rps: float | None
    p50_us: int | None
    p90_us: int | None
    p99_us: int | None
    error_rate: float | None
    failed_rows: list[str]
    elapsed_s: float

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


@dataclass(frozen=True)
class CurvePoint:
    """One tested rate: how many of its steps passed, and its latest step (whose numbers
    stand for the rate: one run's numbers together rather than medians of different runs,
    which would also hide a re-test that disagreed)."""

    rate_rps: float
    steps: int
    passes: int
    latest: CapacityStep

    @property
    def passed(self) -> bool:
        """The majority verdict: more than half of the steps passed."""
        return 2 * self.passes > self.steps

    @property
    def verdict(self) -> str:
        """The step's verdict for a rate tested once, else e.g. "pass 2/2" or "fail 1/3"
        (passes / steps); "tie 1/2" when the budget ran out mid-re-test."""
        if self.steps == 1:
            return self.latest.verdict
        word = "tie" if 2 * self.passes == self.steps else "pass" if self.passed else "fail"
        return f"{word} {self.passes}/{self.steps}"


@dataclass
class CapacityResult:
    sweep_dir: Path
    capacity_rps: float | None  # highest rate that majority-passed below limit_rps
    limit_rps: float | None  # lowest rate that did not majority-pass
    converged: bool
    reason: str
    steps: list[CapacityStep] = field(default_factory=list)
    knee_rps: float | None = None
    elapsed_s: float = 0.0

    def curve(self) -> list[CurvePoint]:
        """One point per tested rate, by rate."""
        by_rate: dict[float, list[CapacityStep]] = {}
        for step in self.steps:
            by_rate.setdefault(step.rate_rps, []).append(step)
        return [CurvePoint(rate_rps=rate, steps=len(steps),
                           passes=sum(s.passed for s in steps), latest=steps[-1])
                for rate, steps in sorted(by_rate.items())]

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_dir": str(self.sweep_dir), "capacity_rps": self.capacity_rps,
                "limit_rps": self.limit_rps, "converged": self.converged, "reason": self.reason,
                "knee_rps": self.knee_rps, "elapsed_s": round(self.elapsed_s, 3),
                "steps": [dataclasses.asdict(s) for s in self.steps],
                "curve": [{"rate_rps": p.rate_rps, "achieved_rps": p.latest.achieved_rps,
                           "p50_us": p.latest.p50_us, "p99_us": p.latest.p99_us,
                           "passed": p.passed, "steps": p.steps, "passes": p.passes}
                          for p in self.curve()]}


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
