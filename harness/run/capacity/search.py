"""The capacity search on any step runner: coarse steps, bisection, confirmation.

:func:`search` takes a :data:`StepRunner` (find_capacity's runs a real step, the tests a
scripted one) and keeps the result's bracket current after every step; the rules are in
the package's docstring (harness/run/capacity/__init__.py).
"""

from __future__ import annotations

from collections.abc import Callable

from harness.run.capacity.model import CapacityOptions, CapacityResult, CapacityStep

__all__ = ["StepRunner", "search"]

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
