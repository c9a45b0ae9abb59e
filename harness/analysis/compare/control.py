"""A control request name: dividing each run by a model the release did not touch.

``control=NAME`` (``harness compare/ab --control``) names a request name the user knows
is the same in A and B (a model no release touched, served by the same service). Its requests were
interleaved with the others', so it felt the same machine: every other series' p50 and p90
in a run is divided by the control's same series in that run, and the rounds judge what is
left, the change beyond the machine's. Several controls (``--control`` repeated) divide by
their geometric mean (``combined``): each control's value carries its own samples' error
(a model with few requests per run, a noisy divisor), and the mean of m of them has about
1/m of their summed variance; on the calibration's A/B sessions fraud's divided ``infer``
p50 was detected in 8/10 with churn (116 requests per run), 10/10 with ranking (189) and
10/10 with both (BENCHMARKS.md). Measured on the 2-core VM (BENCHMARKS.md,
"Comparison across runs"): between back-to-back A/A runs the untouched models' ``infer``
p50 moves by sd 10-14 % together; divided by another model's, by 4-6 %. Tails are not
divided (``CONTROL_MAX_PERCENTILE``): a p99 is a few rare events per run that do not
repeat in the control, and dividing added the control's tail noise (sd 17-18 -> 67-80 %). The
control's own rows show the machine's drift and are not judged; a change that slows every
name alike, the control's included, is cancelled with the machine's, so a change to shared
code needs a comparison without a control. Divided, what varies between runs is mostly the
samples' own error, so the moderated t of these rows is fitted in units of each row's
sampling variance (``runs.moderated``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.analysis.compare.values import RunValue, SeriesId, run_values
from harness.analysis.slo import request_names, resolve_name
from harness.rundir import RunDir

__all__ = ["CONTROL_MAX_PERCENTILE", "Values", "combined", "control_label", "control_names",
           "control_notes", "divided", "sum_se", "values_of"]

#: percentiles above this are judged as they are, not divided by the control's (see above)
CONTROL_MAX_PERCENTILE = 90.0

Values = list[dict[float, RunValue]]


def values_of(series: SeriesId, a: Sequence[RunDir], b: Sequence[RunDir],
              percentiles: Sequence[float]) -> tuple[Values, Values]:
    """The runs' values (``hist_values``) of one series, A's and B's."""
    return ([run_values(r, series, percentiles) for r in a],
            [run_values(r, series, percentiles) for r in b])


def combined(values: Sequence[tuple[Values, Values]]) -> tuple[Values, Values]:
    """Several controls' values as one: per run and percentile the geometric mean of theirs
    (None where any lacks it), its log's error sqrt(sum se^2) / m, and their samples
    summed."""
    if len(values) == 1:
        return values[0]

    def one_run(per_control: Sequence[dict[float, RunValue]]) -> dict[float, RunValue]:
        out = {}
        for p in per_control[0]:
            got = [v[p] for v in per_control]
            n = sum(v.n for v in got)
            if any(not v.us for v in got):
                out[p] = RunValue(None, n, None)
                continue
            us = round(math.exp(sum(math.log(v.us) for v in got if v.us) / len(got)))
            ses = [v.se for v in got if v.se is not None]
            se = math.sqrt(sum(x * x for x in ses)) / len(got) if len(ses) == len(got) \
                else None
            out[p] = RunValue(us, n, se)
        return out

    sides = []
    for side in (0, 1):
        runs = zip(*(v[side] for v in values), strict=True)
        sides.append([one_run(per_control) for per_control in runs])
    return sides[0], sides[1]


def divided(a_runs: tuple[int | None, ...], b_runs: tuple[int | None, ...],
             ca: tuple[int | None, ...], cb: tuple[int | None, ...]
             ) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    """Each run's value divided by the control's in that run, times the control's geometric
    mean over all the runs (so the values stay in µs, at the control's mean speed); None
    where either is missing."""
    logs = [math.log(c) for c in (*ca, *cb) if c]
    if not logs:
        return tuple(None for _ in a_runs), tuple(None for _ in b_runs)
    g = math.exp(sum(logs) / len(logs))

    def one(xs: tuple[int | None, ...], cs: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(max(1, round(x / c * g)) if x and c else None
                     for x, c in zip(xs, cs, strict=True))

    return one(a_runs, ca), one(b_runs, cb)


def sum_se(x: float | None, y: float | None) -> float | None:
    """The standard error of a log ratio of two runs' values with errors x and y."""
    return math.hypot(x, y) if x is not None and y is not None else None


def control_names(given: str | Sequence[str], a: Sequence[RunDir], b: Sequence[RunDir]
                  ) -> list[str]:
    """The controls' request names as the runs record them (``predict churn`` finds ``POST
    predict churn``); a ValueError naming the rule when one cannot be a control."""
    wanted = [given] if isinstance(given, str) else list(given)
    if not wanted:
        raise ValueError("--control needs a request name")
    if "*" in wanted:
        raise ValueError("--control must be a request name, not '*' (all names merged)")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"--control needs at least 2 runs per side (got {len(a)} and "
                         f"{len(b)}): the runs' spread measures what is left after dividing "
                         "by the control; harness ab --runs 3")
    runs = [*a, *b]
    names = []
    for text in wanted:
        name = resolve_name(runs[0], text)
        for run in runs:
            known = request_names(run)
            if name not in known:
                raise ValueError(f"--control {text!r}: no such request name in run "
                                 f"{run.path.name} (names: {', '.join(known) or 'none'})")
        if name in names:
            raise ValueError(f"--control {text!r} is given twice (as {name!r})")
        names.append(name)
    if not set(request_names(runs[0])) - set(names):
        raise ValueError(f"--control {', '.join(map(repr, wanted))}: every request name of "
                         "the runs is a control, there is nothing to compare against them")
    return names


def control_label(names: Sequence[str]) -> str:
    """How rows and notes name the control(s): one name, or 'geomean(a, b)'."""
    return names[0] if len(names) == 1 else f"geomean({', '.join(names)})"


def control_notes(control: str, calibrated: bool) -> list[str]:
    """What a comparison with a control (``control_label``) says about how it was judged."""
    notes = [f"control {control!r}: every other name's p50..p{CONTROL_MAX_PERCENTILE:g} is "
             "divided by the control's in the same run (the change beyond the machine's); "
             "its own rows show the machine's drift; '*' (all names merged, the control's "
             "included) is left out; a change that slows every name alike is cancelled with "
             "it; rounds whose machine-speed probe moved are kept (the control divides the "
             "speed out)"]
    if calibrated:
        notes.append("the noise calibration is used for the rows not divided by the control "
                     "only (it measured the series as they are)")
    return notes
