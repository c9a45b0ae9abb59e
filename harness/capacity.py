"""Capacity search (``harness capacity``): the highest arrival rate that meets an SLO.

An open-model sweep: each step is a full run (its own run directory under the
sweep directory) at a fixed arrival rate, checked against the SLO with
``harness.slo.check``. Coarse steps double the rate from ``start_rps`` until a
step fails (or halve it until one passes), then bisection narrows the bracket
[highest pass, lowest fail] until it is within ``tolerance`` of the passing rate.

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
from harness.run import RunError, RunOptions, run
from harness.rundir import RunDir, write_json_atomic
from harness.service import ServedTarget, TargetError, serve_reference
from harness.slo import Slo, check

__all__ = ["CapacityError", "CapacityOptions", "CapacityResult", "CapacityStep",
           "find_capacity", "format_capacity", "knee_index", "step_seconds"]

_REFERENCE_STAGE_MAP = Path(__file__).resolve().parent / "stagemaps" / "reference_service.json"


class CapacityError(Exception):
    """The sweep could not run (the target did not start, a step could not start)."""


@dataclass(frozen=True)
class CapacityOptions:
    """A sweep: ``template`` is the run of every step (its rate, out and duration are set
    per step); the rest steers the search. Checked when built."""

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
    phase: str  # "coarse" or "bisect"
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


@dataclass
class CapacityResult:
    sweep_dir: Path
    capacity_rps: float | None  # highest rate that passed
    limit_rps: float | None  # lowest rate that did not
    converged: bool
    reason: str
    steps: list[CapacityStep] = field(default_factory=list)
    knee_rps: float | None = None
    elapsed_s: float = 0.0

    def curve(self) -> list[CapacityStep]:
        return sorted(self.steps, key=lambda s: s.rate_rps)

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_dir": str(self.sweep_dir), "capacity_rps": self.capacity_rps,
                "limit_rps": self.limit_rps, "converged": self.converged, "reason": self.reason,
                "knee_rps": self.knee_rps, "elapsed_s": round(self.elapsed_s, 3),
                "steps": [dataclasses.asdict(s) for s in self.steps],
                "curve": [{"rate_rps": s.rate_rps, "achieved_rps": s.achieved_rps,
                           "p50_us": s.p50_us, "p99_us": s.p99_us, "passed": s.passed}
                          for s in self.curve()]}


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
    step_opts = dataclasses.replace(base, rate=round(rate, 3), users=None, spawn_rate=None,
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
        index=index, phase=phase, rate_rps=round(rate, 3), run_dir=str(result.run_dir),
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
    try:
        _search(opts, base, sweep, result, on_step, began)
    finally:
        if served is not None:
            served.stop()
    result.elapsed_s = time.monotonic() - began
    _finish(result, sweep)
    return result


def _search(opts: CapacityOptions, base: RunOptions, sweep: Path, result: CapacityResult,
            on_step: Callable[[CapacityStep], None] | None, began: float) -> None:
    lo: float | None = None
    hi: float | None = None

    def take(phase: str, rate: float) -> bool:
        nonlocal lo, hi
        step = _step(opts, base, sweep, len(result.steps) + 1, phase, rate)
        result.steps.append(step)
        if step.passed:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        result.capacity_rps, result.limit_rps = lo, hi
        result.elapsed_s = time.monotonic() - began
        _finish(result, sweep)
        if on_step is not None:
            on_step(step)
        return step.passed

    rate = opts.start_rps
    while len(result.steps) < opts.max_steps:
        passed = take("coarse", rate)
        if lo is not None and hi is not None:
            break
        rate = rate * 2 if passed else rate / 2
        if rate > opts.max_rps:
            result.reason = f"the SLO holds up to max rate {lo:g} req/s (raise --max-rate)"
            return
        if rate < opts.min_rps:
            result.reason = (f"no rate met the SLO, down to {hi:g} req/s (min rate "
                             f"{opts.min_rps:g})")
            return
    while lo is not None and hi is not None and hi - lo > opts.tolerance * lo:
        if len(result.steps) >= opts.max_steps:
            result.reason = f"stopped after {opts.max_steps} steps before the tolerance was met"
            return
        take("bisect", (lo + hi) / 2)
    if lo is not None and hi is not None:
        result.converged = True
        result.reason = (f"capacity {lo:g} req/s (fails at {hi:g} req/s; bracket "
                         f"{100 * (hi - lo) / lo:.1f} % <= {100 * opts.tolerance:g} %)")
    else:
        result.reason = f"stopped after {opts.max_steps} steps without a bracket"


def _finish(result: CapacityResult, sweep: Path) -> None:
    curve = [s for s in result.curve() if s.achieved_rps is not None and s.p99_us is not None]
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

    for s in result.curve():
        err = "-" if s.error_rate is None else f"{100 * s.error_rate:.2f}%"
        ach = "-" if s.achieved_rps is None else f"{s.achieved_rps:.1f}"
        mark = "  <- knee" if result.knee_rps == s.rate_rps else ""
        lines.append(f"{s.rate_rps:>9g} {ach:>11} {ms(s.p50_us):>9} {ms(s.p90_us):>9} "
                     f"{ms(s.p99_us):>9} {err:>7}  {s.verdict}{mark}")
        lines += [f"{'':>11}{row}" for row in s.failed_rows[:2]]
    lines += ["", result.reason or "-"]
    if result.capacity_rps is not None:
        lines.append(f"capacity: {result.capacity_rps:g} req/s meets the SLO")
    return lines
