"""capacity.json, the record of a capacity sweep (``harness capacity``): its steps, its
curve, its answer, and the settings it ran with.

Written by ``harness.run.capacity`` into the sweep directory after every step; read back
by the sweep's report. Each step is a run directory nested in the sweep directory; a step
names it by path, and a reader resolves it by its last component under the sweep
directory (a sweep copied elsewhere still finds its steps, and a hostile file cannot point
a reader outside it). Latencies in µs (client, from the intended start), rates in req/s.
A malformed document raises ValueError naming the place, like the other records.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.rundir.records.base import as_map, need

__all__ = ["CapacityResult", "CapacityStep", "CurvePoint", "StepObjective"]

MAX_STEPS = 1000  # a sweep runs at most 100 (CapacityOptions.max_steps); a file may lie


@dataclass(frozen=True)
class StepObjective:
    """One SLO row of a step as ``harness.analysis.slo.check`` judged it: the ``target``,
    the ``measured`` value and the confidence ``bound`` that decided the verdict (µs for
    latency, a fraction for an error rate, req/s for throughput)."""

    objective: str
    kind: str
    target: float
    measured: float | None
    bound: float | None
    verdict: str


@dataclass(frozen=True)
class CapacityStep:
    """One run of the sweep; latencies in µs (client, from the intended start).

    ``achieved_rps`` is the run's summary's (by intended start in the open model, so never
    above ``target_rps``, what the schedule held; ``achieved_by`` says which count it is).
    """

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
    target_rps: float | None = None
    achieved_by: str | None = None
    objectives: tuple[StepObjective, ...] = ()
    seed: int | None = None  # of the step's arrival schedule

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @classmethod
    def from_dict(cls, d: Any, where: str = "step") -> CapacityStep:
        d = as_map(d, where)
        rows = need(d, "failed_rows", where)
        if not isinstance(rows, list | tuple):
            raise ValueError(f"{where}.failed_rows must be a list (got {type(rows).__name__})")
        objectives = d.get("objectives") or []
        if not isinstance(objectives, list | tuple):
            raise ValueError(f"{where}.objectives must be a list (got {objectives!r})")
        return cls(
            index=_int(need(d, "index", where), f"{where}.index"),
            phase=_text(need(d, "phase", where), f"{where}.phase"),
            rate_rps=_rate(need(d, "rate_rps", where), f"{where}.rate_rps"),
            run_dir=_text(need(d, "run_dir", where), f"{where}.run_dir"),
            verdict=_text(need(d, "verdict", where), f"{where}.verdict"),
            achieved_rps=_num(d.get("achieved_rps"), f"{where}.achieved_rps"),
            **{k: _int(d.get(k), f"{where}.{k}", True) for k in ("p50_us", "p90_us", "p99_us")},
            error_rate=_num(d.get("error_rate"), f"{where}.error_rate"),
            failed_rows=[str(r) for r in rows[:20]],
            elapsed_s=_num(d.get("elapsed_s"), f"{where}.elapsed_s") or 0.0,
            target_rps=_num(d.get("target_rps"), f"{where}.target_rps"),
            achieved_by=None if d.get("achieved_by") is None else str(d["achieved_by"]),
            objectives=tuple(_objective(o, f"{where}.objectives[{i}]")
                             for i, o in enumerate(objectives[:50])),
            seed=_int(d.get("seed"), f"{where}.seed", True))


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
    """The sweep: its bracket, its steps, the knee of its curve; ``settings`` are what it
    ran with (scenario, target, search options, and the SLO as an SLO document)."""

    sweep_dir: Path
    capacity_rps: float | None  # highest rate that majority-passed below limit_rps
    limit_rps: float | None  # lowest rate that did not majority-pass
    converged: bool
    reason: str
    steps: list[CapacityStep] = field(default_factory=list)
    knee_rps: float | None = None
    elapsed_s: float = 0.0
    settings: dict[str, Any] | None = None

    def curve(self) -> list[CurvePoint]:
        """One point per tested rate, by rate."""
        by_rate: dict[float, list[CapacityStep]] = {}
        for step in self.steps:
            by_rate.setdefault(step.rate_rps, []).append(step)
        return [CurvePoint(rate_rps=rate, steps=len(steps),
                           passes=sum(s.passed for s in steps), latest=steps[-1])
                for rate, steps in sorted(by_rate.items())]

    def knee_reading(self) -> str:
        """One line: the knee, and where it lies against the capacity (the knee is where
        p99 starts to climb faster than the achieved rate: a property of the curve, not of
        the SLO, so it need not be the capacity)."""
        knee, cap = self.knee_rps, self.capacity_rps
        if knee is None:
            return "knee: none (fewer than 3 rates, or p99 did not rise with the achieved rate)"
        head = f"knee: {knee:g} req/s (Kneedle on p99 vs achieved rate)"
        if cap is None:
            return head
        if knee < cap:
            return (f"{head}, below the capacity: from {knee:g} to {cap:g} req/s p99 climbs "
                    "faster than the rate (queueing) while the SLO still holds")
        if knee > cap:
            return f"{head}, above the capacity: the SLO binds before p99 turns up"
        return f"{head}, at the capacity"

    def step_dir(self, step: CapacityStep) -> Path:
        """The step's run directory: its name under the sweep directory."""
        name = Path(step.run_dir).name
        if name in ("", ".", ".."):
            raise ValueError(f"step {step.index}: run_dir has no directory name "
                             f"(got {step.run_dir!r})")
        return self.sweep_dir / name

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_dir": str(self.sweep_dir), "capacity_rps": self.capacity_rps,
                "limit_rps": self.limit_rps, "converged": self.converged, "reason": self.reason,
                "knee_rps": self.knee_rps, "elapsed_s": round(self.elapsed_s, 3),
                "steps": [dataclasses.asdict(s) for s in self.steps],
                "curve": [{"rate_rps": p.rate_rps, "target_rps": p.latest.target_rps,
                           "achieved_rps": p.latest.achieved_rps, "p50_us": p.latest.p50_us,
                           "p90_us": p.latest.p90_us, "p99_us": p.latest.p99_us,
                           "passed": p.passed, "verdict": p.verdict, "steps": p.steps,
                           "passes": p.passes} for p in self.curve()],
                **({"settings": self.settings} if self.settings is not None else {})}

    @classmethod
    def from_dict(cls, d: Any, sweep_dir: Path, where: str = "capacity.json"
                  ) -> CapacityResult:
        """The record of capacity.json found in ``sweep_dir`` (where it is now, not where
        the file says it was written)."""
        d = as_map(d, where)
        steps = need(d, "steps", where)
        if not isinstance(steps, list | tuple) or len(steps) > MAX_STEPS:
            got = f"{len(steps)} steps" if isinstance(steps, list | tuple) \
                else type(steps).__name__
            raise ValueError(f"{where}: steps must be a list of at most {MAX_STEPS} steps "
                             f"(got {got})")
        settings = d.get("settings")
        return cls(sweep_dir=Path(sweep_dir),
                   capacity_rps=_num(d.get("capacity_rps"), f"{where}: capacity_rps"),
                   limit_rps=_num(d.get("limit_rps"), f"{where}: limit_rps"),
                   converged=bool(d.get("converged")), reason=str(d.get("reason") or ""),
                   steps=[CapacityStep.from_dict(s, f"{where}: steps[{i}]")
                          for i, s in enumerate(steps)],
                   knee_rps=_num(d.get("knee_rps"), f"{where}: knee_rps"),
                   elapsed_s=_num(d.get("elapsed_s"), f"{where}: elapsed_s") or 0.0,
                   settings=dict(settings) if isinstance(settings, Mapping) else None)


def _num(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where} must be a finite number (got {v!r})")
    return float(v)


def _rate(v: Any, where: str) -> float:
    rate = _num(v, where)
    if rate is None or rate <= 0:
        raise ValueError(f"{where} must be a rate > 0 req/s (got {v!r})")
    return rate


def _int(v: Any, where: str, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{where} must be an integer >= 0 (got {v!r})")
    return v


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 4096:
        raise ValueError(f"{where} must be a non-empty string (got {v!r:.80})")
    return v


def _objective(d: Any, where: str) -> StepObjective:
    d = as_map(d, where)
    target = _num(need(d, "target", where), f"{where}.target")
    if target is None:
        raise ValueError(f"{where}.target must be a finite number (got None)")
    return StepObjective(objective=_text(need(d, "objective", where), f"{where}.objective"),
                         kind=_text(need(d, "kind", where), f"{where}.kind"),
                         target=target,
                         measured=_num(d.get("measured"), f"{where}.measured"),
                         bound=_num(d.get("bound"), f"{where}.bound"),
                         verdict=_text(need(d, "verdict", where), f"{where}.verdict"))
