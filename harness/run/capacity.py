"""Capacity search (``harness capacity``): the highest arrival rate that meets an SLO.

An open-model sweep: each step is a full run (its own run directory under the
sweep directory) at a fixed arrival rate, checked against the SLO with
``harness.analysis.slo.check``. Coarse steps double the rate from ``start_rps`` until a
step fails (or halve it until one passes), then bisection narrows the bracket
[highest pass, lowest fail] until it is within ``tolerance`` of the passing rate.

Near the knee one step decides pass or fail and two steps at one rate can disagree,
so a converged bracket is then confirmed: its ends are re-tested, first the lowest
failing rate, then the highest passing one, each until most of its steps agree (one
more step when the re-test agrees, two when it does not). A rate's verdict is the
majority of its steps, and the bracket is always computed from those verdicts: the
highest majority-passing rate below the lowest rate that did not majority-pass (a tie,
left only when the step budget runs out mid-re-test, does not meet the SLO). When an
end flips, the search goes on from the new bracket: coarse steps again when one side
is gone (doubling from the highest pass when no rate above it fails any more, halving
from the lowest fail when none below it passes), bisection when it is wider than the
tolerance, then a new confirmation; a rate already confirmed (two or more steps, a
majority) is not re-tested. Confirmation costs 2 steps per pass when the re-tests agree and at
most 4; ``max_steps`` bounds everything, and a search that runs out of steps reports
the best bracket known, not converged.

A step "meets the SLO" only when its verdict is ``pass``: an inconclusive step
(too few samples, or the target inside the confidence interval) or an invalid
one (the run's self-check failed, e.g. the achieved rate fell short of the target
rate because the service could not keep up) counts as not meeting it, so the
capacity found is one the data supports at the SLO's confidence.

When the target is the reference service, it is started once for the whole
sweep (a restart per step would cost seconds and change its warm state).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import stats
from harness.analysis.slo import Slo, check
from harness.run import RunError, RunOptions, run
from harness.run.target import ServedTarget, TargetError, serve_reference
from harness.rundir import RunDir, write_json_atomic

__all__ = ["CapacityError", "CapacityOptions", "CapacityResult", "CapacityStep",
           "CurvePoint", "StepRunner", "find_capacity", "format_capacity", "knee_index",
           "search", "step_seconds"]

_REFERENCE_STAGE_MAP = Path(__file__).resolve().parents[1] / "stagemaps" / "reference_service.json"


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


def step_seconds(opts: CapacityOptions, rate: float) -> float:
    """Measured time of a step at ``rate``: long enough for the SLO's highest percentile.

    A step at a low rate with too few samples can only be inconclusive, so it gets
    1.5 x the zero-exceedance minimum (stats.min_samples_for_percentile), up to 3 x step_s.
    """
    ps = [p for o in opts.slo.objectives for p, _ in o.latency_us]
    if not ps:
        return opts.step_s
    need = 1.5 * stats.min_samples_for_percentile(max(ps), opts.slo.confidence)
    return round(min(max(opts.step_s, need / rate), 3 * opts.step_s), 3)


def _step(opts: CapacityOptions, base: RunOptions, sweep: Path, index: int, phase: str,
          rate: float) -> CapacityStep:
    began = time.monotonic()
    step_opts = dataclasses.replace(base, rate=rate, users=None, spawn_rate=None,
                                    duration_s=step_seconds(opts, rate),
                                    warmup_s=opts.warmup_s, out=sweep,
                                    tags={**base.tags, "capacity_step": str(index)})
    try:
        result = run(step_opts)
    except RunError as exc:
        raise CapacityError(f"step {index} at {rate:g} req/s could not run: {exc}") from None
    rd = RunDir(result.run_dir)
    verdict = check(rd, opts.slo)
    rows = (result.summary or {}).get("requests", [])
    star: dict[str, Any] = next((r for r in rows if r["name"] == "*"), {})
    client = (star.get("latency") or {}).get("client") or {}
    failed = [f"{r.objective}: {r.verdict} ({r.detail})" for r in verdict.rows
              if r.verdict != "pass"]
    failed += [f"self-check: {e}" for e in verdict.self_check_errors]
    return CapacityStep(
        index=index, phase=phase, rate_rps=rate, run_dir=str(result.run_dir),
        verdict=verdict.verdict, achieved_rps=star.get("rps"), p50_us=client.get("p50_us"),
        p90_us=client.get("p90_us"), p99_us=client.get("p99_us"),
        error_rate=None if star.get("fail_pct") is None else star["fail_pct"] / 100.0,
        failed_rows=failed, elapsed_s=round(time.monotonic() - began, 3))


def _sweep_dir(out: Path, label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(64):
        path = out / f"{stamp}-capacity-{label}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CapacityError(f"could not create a sweep directory under {out}")


def find_capacity(opts: CapacityOptions,
                  on_step: Callable[[CapacityStep], None] | None = None) -> CapacityResult:
    """Run the sweep; writes ``capacity.json`` into the sweep directory after every step."""
    began = time.monotonic()
    sweep = _sweep_dir(opts.out, opts.template.scenario.stem)
    served: ServedTarget | None = None
    base = opts.template
    if base.serve == "reference":
        try:
            served = serve_reference(base.serve_options, sweep / "service.log")
        except (TargetError, ValueError, OSError) as exc:
            raise CapacityError(f"the reference service did not start: {exc}") from None
        stage_map = base.stage_map or _REFERENCE_STAGE_MAP
        base = dataclasses.replace(base, serve=None, target=served.url, stage_map=stage_map)
    result = CapacityResult(sweep_dir=sweep, capacity_rps=None, limit_rps=None,
                            converged=False, reason="")

    def run_step(index: int, phase: str, rate: float) -> CapacityStep:
        return _step(opts, base, sweep, index, phase, rate)

    def after_step(step: CapacityStep) -> None:
        result.elapsed_s = time.monotonic() - began
        _finish(result, sweep)
        if on_step is not None:
            on_step(step)

    try:
        search(opts, run_step, result, after_step)
    finally:
        if served is not None:
            served.stop()
    result.elapsed_s = time.monotonic() - began
    _finish(result, sweep)
    return result


StepRunner = Callable[[int, str, float], CapacityStep]
"""Runs step ``index`` (from 1) of ``phase`` at a rate in req/s, rounded to 0.001."""


def _majority(outcomes: list[bool]) -> bool | None:
    """True when most of a rate's steps passed, False when most failed, None on a tie."""
    passes = sum(outcomes)
    return None if 2 * passes == len(outcomes) else 2 * passes > len(outcomes)


def _confirmed(outcomes: list[bool]) -> bool:
    return len(outcomes) >= 2 and _majority(outcomes) is not None


def _bracket(outcomes: dict[float, list[bool]]) -> tuple[float | None, float | None]:
    """(highest majority-passing rate below the lowest rate that did not majority-pass,
    that rate): the brute force's "highest rate that passed below the lowest that failed"."""
    hi = min((r for r, o in outcomes.items() if _majority(o) is not True), default=None)
    lo = max((r for r, o in outcomes.items() if _majority(o) and (hi is None or r < hi)),
             default=None)
    return lo, hi


def _agreement(outcomes: list[bool]) -> str:
    """How many of a rate's steps agree with its majority, e.g. "2 of 3"."""
    return f"{max(sum(outcomes), len(outcomes) - sum(outcomes))} of {len(outcomes)}"


def search(opts: CapacityOptions, run_step: StepRunner, result: CapacityResult,
           on_step: Callable[[CapacityStep], None] | None = None) -> None:
    """The search on any step runner (find_capacity's runs a real step): appends every
    step to ``result``, keeps its bracket current and sets converged and reason at the end.

    Every round recomputes the bracket from the majorities of all tested rates, then takes
    one action: a coarse step while one side of the bracket is missing, a bisection step
    while it is wider than the tolerance, else re-tests of an unconfirmed end until it
    has a majority; with both ends confirmed the search has converged.
    """
    outcomes: dict[float, list[bool]] = {}

    def take(phase: str, rate: float) -> None:
        rate = round(rate, 3)
        step = run_step(len(result.steps) + 1, phase, rate)
        result.steps.append(step)
        outcomes.setdefault(rate, []).append(step.passed)
        result.capacity_rps, result.limit_rps = _bracket(outcomes)
        if on_step is not None:
            on_step(step)

    def out_of_steps(before: str) -> bool:
        if len(result.steps) < opts.max_steps:
            return False
        result.reason = f"stopped after {opts.max_steps} steps {before}"
        return True

    while True:
        lo, hi = _bracket(outcomes)
        if lo is None or hi is None:
            rate = lo * 2 if lo is not None else hi / 2 if hi is not None else opts.start_rps
            if rate > opts.max_rps:
                result.reason = f"the SLO holds up to max rate {lo:g} req/s (raise --max-rate)"
                return
            if rate < opts.min_rps:
                result.reason = (f"no rate met the SLO, down to {hi:g} req/s (min rate "
                                 f"{opts.min_rps:g})")
                return
            if out_of_steps("without a bracket"):
                return
            take("coarse", rate)
        elif hi - lo > opts.tolerance * lo:
            if out_of_steps("before the tolerance was met"):
                return
            take("bisect", (lo + hi) / 2)
        else:
            end = next((r for r in (hi, lo) if not _confirmed(outcomes[r])), None)
            if end is None:
                result.converged = True
                result.reason = _converged_reason(outcomes, lo, hi, opts.tolerance)
                return
            while not _confirmed(outcomes[end]):
                if out_of_steps(f"before the bracket's ends were confirmed ({end:g} req/s: "
                                f"{sum(outcomes[end])} of {len(outcomes[end])} steps passed)"):
                    return
                take("confirm", end)


def _converged_reason(outcomes: dict[float, list[bool]], lo: float, hi: float,
                      tolerance: float) -> str:
    agree_lo, agree_hi = _agreement(outcomes[lo]), _agreement(outcomes[hi])
    confirmed = (f"each confirmed by {agree_lo} steps" if agree_lo == agree_hi else
                 f"confirmed by {agree_lo} and {agree_hi} steps respectively")
    return (f"capacity {lo:g} req/s (fails at {hi:g} req/s, {confirmed}; bracket "
            f"{100 * (hi - lo) / lo:.1f} % <= {100 * tolerance:g} %)")


def _finish(result: CapacityResult, sweep: Path) -> None:
    curve = [p.latest for p in result.curve()
             if p.latest.achieved_rps is not None and p.latest.p99_us is not None]
    k = knee_index([float(s.achieved_rps or 0) for s in curve], [float(s.p99_us or 0)
                                                                  for s in curve])
    result.knee_rps = curve[k].rate_rps if k is not None else None
    write_json_atomic(sweep / "capacity.json", result.to_dict())


def format_capacity(result: CapacityResult) -> list[str]:
    """The latency-throughput curve as a table, the knee and the capacity found."""
    lines = [f"sweep {result.sweep_dir}  ({len(result.steps)} steps, {result.elapsed_s:.0f} s)",
             "", f"{'rate/s':>9} {'achieved/s':>11} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
             f"{'errors':>7}  verdict"]

    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.3f}"

    for point in result.curve():
        s = point.latest
        err = "-" if s.error_rate is None else f"{100 * s.error_rate:.2f}%"
        ach = "-" if s.achieved_rps is None else f"{s.achieved_rps:.1f}"
        mark = "  <- knee" if result.knee_rps == s.rate_rps else ""
        lines.append(f"{s.rate_rps:>9g} {ach:>11} {ms(s.p50_us):>9} {ms(s.p90_us):>9} "
                     f"{ms(s.p99_us):>9} {err:>7}  {point.verdict}{mark}")
        lines += [f"{'':>11}{row}" for row in s.failed_rows[:2]]
    lines += ["", result.reason or "-"]
    if result.capacity_rps is not None:
        lines.append(f"capacity: {result.capacity_rps:g} req/s meets the SLO")
    return lines
