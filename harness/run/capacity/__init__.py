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
sweep (a restart per step would cost seconds and change its warm state). Step ``i`` (from
1) draws its arrivals with seed ``template.seed + i - 1``: a re-test is a new draw, not a
replay of its first step's schedule.

A step's achieved rate is its summary's: the intended starts of its measured window that
were made (or the requests answered, when fewer), so it never exceeds the rate asked. The
knee (Kneedle on p99 against the achieved rate) is a property of the curve, not the answer:
the table marks the capacity, and says where the knee lies against it.

Modules: ``model`` (options, the knee; the steps and the result are capacity.json's record,
harness.rundir.records.capacity), ``search`` (the bracket search on any step runner),
``sweep`` (a step is a real run: find_capacity), ``settings`` (what capacity.json keeps of
the options and the SLO), ``report`` (the table). The sweep's HTML report is
harness.report.sweep (``harness report SWEEP_DIR``).
"""

from __future__ import annotations

from harness.run.capacity.model import (
    CapacityError,
    CapacityOptions,
    CapacityResult,
    CapacityStep,
    CurvePoint,
    StepObjective,
    knee_index,
)
from harness.run.capacity.report import format_capacity
from harness.run.capacity.search import StepRunner, search
from harness.run.capacity.sweep import find_capacity, step_seconds

__all__ = ["CapacityError", "CapacityOptions", "CapacityResult", "CapacityStep",
           "CurvePoint", "StepObjective", "StepRunner", "find_capacity", "format_capacity",
           "knee_index", "search", "step_seconds"]
