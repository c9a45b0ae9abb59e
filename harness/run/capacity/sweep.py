"""The capacity sweep with real runs: each step is a full run at a fixed arrival rate.

Each step is its own run directory under the sweep directory, checked against the SLO
with ``harness.analysis.slo.check``; ``capacity.json`` is rewritten after every step.
When the target is the reference service, it is started once for the whole sweep (a
restart per step would cost seconds and change its warm state).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import stats
from harness.analysis.slo import check
from harness.run.capacity.model import (
    CapacityError,
    CapacityOptions,
    CapacityResult,
    CapacityStep,
    StepObjective,
    knee_index,
)
from harness.run.capacity.search import search
from harness.run.capacity.settings import sweep_settings
from harness.run.options import RunError, RunOptions
from harness.run.orchestrator import run
from harness.run.target import ServedTarget, TargetError, serve_reference
from harness.rundir import RunDir, write_json_atomic

__all__ = ["find_capacity", "step_seconds"]


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
    # Each step its own arrival draw (seed + index - 1): with one seed for all, every step
    # replayed the same draw, scaled by its rate, and a re-test replayed its step's schedule
    # exactly. With 4 s windows seed 1's draw held 7.5/s for 5.5 asked and 27.5/s for 26:
    # one bias shared by every step, which re-tests could not average out.
    step_opts = dataclasses.replace(base, rate=rate, users=None, spawn_rate=None,
                                    duration_s=step_seconds(opts, rate),
                                    warmup_s=opts.warmup_s, out=sweep, seed=base.seed + index - 1,
                                    tags={**base.tags, "capacity_step": str(index)})
    try:
        result = run(step_opts)
    except RunError as exc:
        raise CapacityError(f"step {index} at {rate:g} req/s could not run: {exc}") from None
    rd = RunDir(result.run_dir)
    verdict = check(rd, opts.slo)
    summary = result.summary or {}
    star: dict[str, Any] = next((r for r in summary.get("requests", []) if r["name"] == "*"),
                                {})
    load: dict[str, Any] = summary.get("load") or {}
    client = (star.get("latency") or {}).get("client") or {}
    failed = [f"{r.objective}: {r.verdict} ({r.detail})" for r in verdict.rows
              if r.verdict != "pass"]
    failed += [f"self-check: {e}" for e in verdict.self_check_errors]
    return CapacityStep(
        index=index, phase=phase, rate_rps=rate, run_dir=str(result.run_dir),
        verdict=verdict.verdict, achieved_rps=load.get("achieved_rps"),
        p50_us=client.get("p50_us"), p90_us=client.get("p90_us"), p99_us=client.get("p99_us"),
        error_rate=None if star.get("fail_pct") is None else star["fail_pct"] / 100.0,
        failed_rows=failed, elapsed_s=round(time.monotonic() - began, 3),
        target_rps=load.get("target_rps"), achieved_by=load.get("achieved_by"),
        objectives=tuple(StepObjective(r.objective, r.kind, r.target, r.measured, r.bound,
                                       r.verdict) for r in verdict.rows), seed=step_opts.seed)


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
        base = dataclasses.replace(base, serve=None, target=served.url)
    result = CapacityResult(sweep_dir=sweep, capacity_rps=None, limit_rps=None,
                            converged=False, reason="", settings=sweep_settings(opts))

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


def _finish(result: CapacityResult, sweep: Path) -> None:
    curve = [p.latest for p in result.curve()
             if p.latest.achieved_rps is not None and p.latest.p99_us is not None]
    k = knee_index([float(s.achieved_rps or 0) for s in curve], [float(s.p99_us or 0)
                                                                  for s in curve])
    result.knee_rps = curve[k].rate_rps if k is not None else None
    write_json_atomic(sweep / "capacity.json", result.to_dict())
