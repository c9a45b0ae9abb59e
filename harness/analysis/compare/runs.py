"""Compare K >= 1 runs per side: the run is the unit, judged against the spread between runs.

Each run gives one value per series and percentile (``values``); per row the B/A ratio
and its interval come from ``harness.stats.runs`` on the runs' log values:

- runs made in rounds, A beside B (``harness ab``'s rounds: A B, B A, ..., found from the runs'
  start times): paired by round (``ratio_paired``), so the machine's slow drift cancels
  within a round; with a noise calibration of the row's metric (``noise``, measured on
  back-to-back A/A pairs: the same quantity) pooled with the rounds' spread;
- runs not in rounds: with a calibration, pooled with the runs' spread (``ratio_pooled``);
  without, Welch's t (``ratio_runs``), or Student's for 1 run against >= 2;
- one run per side and no calibration: no test. The within-run distribution-free interval
  (``harness.stats.compare``) still says whether the two runs' samples differ; the verdict
  says what that is worth (``judged``).

A **control** (``control=NAME``, ``--control``): see ``harness.analysis.compare.control``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.analysis.compare.control import (
    CONTROL_MAX_PERCENTILE,
    Values,
    combined,
    control_label,
    control_names,
    control_notes,
    divided,
    sum_se,
    values_of,
)
from harness.analysis.compare.judged import DEFAULT_MIN_EFFECT, Judged, JudgedRow, finish
from harness.analysis.compare.machine import disturbed
from harness.analysis.compare.noise import NoiseCalibration
from harness.analysis.compare.pairwise import comparability
from harness.analysis.compare.values import SeriesId, common_series, hist_values
from harness.analysis.slo import Slo, check
from harness.rundir import RunDir
from harness.stats.compare import quantile_diff
from harness.stats.moderated import moderate, prior
from harness.stats.runs import (
    RatioEstimate,
    ratio_one_run,
    ratio_paired,
    ratio_pooled,
    ratio_runs,
)

__all__ = ["RUNS_PERCENTILES", "compare_runs", "estimate", "rounds"]

RUNS_PERCENTILES: tuple[float, ...] = (50, 90, 99)
BACK_TO_BACK_S = 600.0  # runs starting further apart than this were not made back to back


def _run_id(run: RunDir) -> str:
    return str(run.meta.get("run_id") or run.path.name)


def _checks(a: Sequence[RunDir], b: Sequence[RunDir]) -> tuple[list[str], list[str]]:
    """(problems, notes) of the whole set: every run against the first of A, each side's runs
    among themselves (what a side varies is a problem: its runs are not repeats)."""
    problems, notes = comparability(a[0], b[0])
    for side, runs in (("A", a), ("B", b)):
        for run in runs[1:]:
            p, n = comparability(runs[0], run)
            problems += [f"{run.path.name}: {x}" for x in p]
            problems += [f"runs of side {side} are not repeats: {x}" for x in n]
    if b[1:]:
        problems += [f"{r.path.name}: {x}" for r in b[1:] for x in comparability(a[0], r)[0]]
    for run in (*a, *b):
        status = run.meta.get("status")
        if status not in (None, "complete"):
            notes.append(f"run {run.path.name} is {status} (its self-check: harness summary)")
    return list(dict.fromkeys(problems)), list(dict.fromkeys(n for n in notes if n))


def _start(run: RunDir) -> float | None:
    t = (run.meta.get("timeline") or {}).get("load_start")
    return float(t) if isinstance(t, (int, float)) else None


def rounds(a: Sequence[RunDir], b: Sequence[RunDir]) -> list[tuple[int, int]] | None:
    """(index in a, index in b) of each round when the runs were made in rounds of one A and
    one B (A B A B, or B A, in any mix) by their start times; None otherwise."""
    if len(a) != len(b):
        return None
    timed = [(_start(r), side, i) for side, runs in (("A", a), ("B", b))
             for i, r in enumerate(runs)]
    if any(t is None for t, _, _ in timed):
        return None
    timed.sort(key=lambda x: x[0] or 0.0)
    out = []
    for first, second in zip(timed[::2], timed[1::2], strict=True):
        if first[1] == second[1]:
            return None
        ia, ib = (first[2], second[2]) if first[1] == "A" else (second[2], first[2])
        out.append((ia, ib))
    return out


def estimate(a: Sequence[float], b: Sequence[float], sigma: float | None, pairs: int,
             confidence: float, paired: bool = False) -> RatioEstimate:
    """B/A of one row from the runs' values (see the module's docstring for the choice);
    ``paired``: a[i] and b[i] are one round."""
    if paired:
        if sigma is not None or len(a) >= 2:
            return ratio_paired(a, b, sigma, pairs if sigma is not None else 0, confidence)
        return ratio_one_run(a[0], b[0], None, confidence)
    if sigma is not None:
        return ratio_pooled(a, b, sigma, pairs, confidence)
    if len(a) >= 2 and len(b) >= 2:
        return ratio_runs(a, b, confidence)
    if len(a) + len(b) >= 3:
        return ratio_pooled(a, b, 0.0, 0, confidence)
    return ratio_one_run(a[0], b[0], None, confidence)


def _usable(a_runs: tuple[int | None, ...], b_runs: tuple[int | None, ...],
            pairs: list[tuple[int, int]] | None) -> tuple[list[float], list[float]]:
    if pairs is not None:  # whole rounds only
        kept = [(x, y) for x, y in ((a_runs[i], b_runs[j]) for i, j in pairs) if x and y]
        return [float(x) for x, _ in kept if x], [float(y) for _, y in kept if y]
    return [float(x) for x in a_runs if x], [float(x) for x in b_runs if x]


def _rows(series: SeriesId, a: Sequence[RunDir], b: Sequence[RunDir],
          percentiles: Sequence[float], noise: NoiseCalibration | None,
          confidence: float, pairs: list[tuple[int, int]] | None,
          control: tuple[str, tuple[Values, Values]] | None = None) -> list[JudgedRow]:
    """The rows of one series; ``control``: (its name, the control's values of the same
    series) to divide by at percentiles up to ``CONTROL_MAX_PERCENTILE``."""
    ha = [r.histogram(series.metric, series.name, stage=series.stage) for r in a]
    hb = [r.histogram(series.metric, series.name, stage=series.stage) for r in b]
    va, vb = [hist_values(h, percentiles) for h in ha], [hist_values(h, percentiles) for h in hb]
    rows = []
    for p in map(float, percentiles):
        a_runs, b_runs = tuple(v[p].us for v in va), tuple(v[p].us for v in vb)
        a_n, b_n = sum(v[p].n for v in va), sum(v[p].n for v in vb)
        a_se, b_se = [v[p].se for v in va], [v[p].se for v in vb]
        divided_by = None
        if control is not None and p <= CONTROL_MAX_PERCENTILE:
            divided_by, (ca, cb) = control[0], control[1]
            a_runs, b_runs = divided(a_runs, b_runs, tuple(v[p].us for v in ca),
                                      tuple(v[p].us for v in cb))
            a_se = [sum_se(x, v[p].se) for x, v in zip(a_se, ca, strict=True)]
            b_se = [sum_se(x, v[p].se) for x, v in zip(b_se, cb, strict=True)]
        floor = _sampling_var(a_se, b_se, pairs)
        xa, xb = _usable(a_runs, b_runs, pairs)
        if not xa or not xb:
            rows.append(JudgedRow(series, p, a_runs, b_runs, a_n, b_n, None, None, None,
                                  None, None, "insufficient", control=divided_by))
            continue
        # a calibration measured the series as they are, not divided by a control
        sigma = noise.sigma(series.key(p)) if noise is not None and divided_by is None \
            else None
        est = estimate(xa, xb, sigma, noise.df(p) if noise else 0, confidence,
                       paired=pairs is not None)
        low = high = None
        if len(ha) == len(hb) == 1:
            d = quantile_diff(ha[0], hb[0], p, confidence)
            low, high = d.ci_low_us, d.ci_high_us
        known = est.p_value is not None
        rows.append(JudgedRow(series, p, a_runs, b_runs, a_n, b_n, est.ratio,
                              est.low if known else None, est.high if known else None,
                              est.p_value, est.df, est.method, low, high,
                              control=divided_by, sampling_var=floor))
    return rows


def _all_rows(a: Sequence[RunDir], b: Sequence[RunDir], percentiles: Sequence[float],
              noise: NoiseCalibration | None, confidence: float,
              pairs: list[tuple[int, int]] | None, control: Sequence[str]) -> list[JudgedRow]:
    """The rows of every series the runs share; with controls, the others divided by them
    (their geometric mean), their own marked "control" (the machine's drift: shown, not
    judged), and no '*' (it merges the controls' requests with the others')."""
    every = common_series([*a, *b])
    if control:
        every = [x for x in every if x.name != "*"]
    label = control_label(control) if control else ""
    rows = []
    controls: dict[tuple[str, str | None], tuple[Values, Values]] = {}  # read once
    for series in every:
        ctl = None
        counterparts = [SeriesId(c, series.metric, series.stage) for c in control]
        if control and series.name not in control and all(c in every for c in counterparts):
            key = (series.metric, series.stage)
            if key not in controls:
                controls[key] = combined([values_of(c, a, b, percentiles)
                                          for c in counterparts])
            ctl = (label, controls[key])
        got = _rows(series, a, b, percentiles, noise, confidence, pairs, ctl)
        if series.name in control:
            got = [replace(r, p_value=None, method="control") for r in got]
        rows += got
    return rows


def _sampling_var(a_se: Sequence[float | None], b_se: Sequence[float | None],
                  pairs: list[tuple[int, int]] | None) -> float | None:
    """What the runs' own samples alone put into the spread ``_spread`` measures (log
    scale): per round, the variance of B - A's log (paired), else of one run's log value;
    None when a run lacks it."""
    if pairs is not None:
        per_round = [(a_se[i], b_se[j]) for i, j in pairs]
        got = [x * x + y * y for x, y in per_round if x is not None and y is not None]
        return sum(got) / len(got) if got and len(got) == len(per_round) else None
    every = [x * x for x in (*a_se, *b_se) if x is not None]
    return sum(every) / len(every) if every and len(every) == len(a_se) + len(b_se) else None


def _undisturbed(a: Sequence[RunDir], b: Sequence[RunDir],
                 pairs: list[tuple[int, int]] | None, problems: list[str],
                 notes: list[str], speed_gate: bool = True) -> list[tuple[int, int]] | None:
    """The rounds in which the machine did not change (``machine.disturbed``): the others are
    left out (a note); with none left, or one run per side disturbed, a problem.
    ``speed_gate=False``: a control divides the machine's speed out, rounds are kept."""
    if len(a) == len(b) == 1:
        why = disturbed(a[0], b[0], speed_gate)
        if why:
            problems.append(why)
        return pairs
    if pairs is None:
        return None
    kept = []
    for i, j in pairs:
        why = disturbed(a[i], b[j], speed_gate)
        if why:
            notes.append(f"round left out: {why}")
        else:
            kept.append((i, j))
    if not kept:
        problems.append("the machine changed within every round (notes): nothing left to "
                        "compare")
        return pairs
    return kept


def compare_runs(a: Sequence[RunDir], b: Sequence[RunDir], *,
                 noise: NoiseCalibration | None = None,
                 percentiles: Sequence[float] = RUNS_PERCENTILES, confidence: float = 0.95,
                 min_effect: float = DEFAULT_MIN_EFFECT, slo: Slo | None = None,
                 labels: tuple[str, str] = ("A", "B"),
                 control: str | Sequence[str] | None = None) -> Judged:
    """Compare the B runs against the A runs (B/A per request name, series, percentile);
    ``control``: one or more request names unchanged between A and B to divide the others by
    (see ``harness.analysis.compare.control``)."""
    if not a or not b:
        raise ValueError(f"each side needs at least one run (got {len(a)} and {len(b)})")
    paths = [Path(r.path).resolve() for r in (*a, *b)]
    if len(set(paths)) != len(paths):
        raise ValueError("a run may appear only once across both sides")
    controls = control_names(control, a, b) if control is not None else []
    problems, notes = _checks(a, b)
    described = None
    if noise is not None:
        described = (f"this host's A/A calibration ({noise.pairs} pairs"
                     + (f", {noise.path}" if noise.path else "") + ")")
        notes += [f"noise calibration differs from these runs: {m}"
                  for m in noise.mismatches(a[0])]
        ta, tb = _start(a[0]), _start(b[0])
        if len(a) == len(b) == 1 and ta is not None and tb is not None \
                and abs(tb - ta) > BACK_TO_BACK_S:
            notes.append(f"the two runs started {abs(tb - ta) / 60:.0f} min apart; the "
                         "calibration measured runs made back to back, and runs further "
                         "apart usually differ more")
    pairs = rounds(a, b) if len(a) > 1 else None
    if len(a) > 1 and pairs is None:
        notes.append("the runs were not made in rounds of one A and one B (A B, B A, ...): "
                     "compared unpaired, so the machine's drift between them counts as noise")
    pairs = _undisturbed(a, b, pairs, problems, notes, speed_gate=not controls)
    rows = _all_rows(a, b, percentiles, noise, confidence, pairs, controls)
    if controls:
        notes += control_notes(control_label(controls), noise is not None)
    if noise is None or controls:
        rows = moderated(rows, pairs, confidence,
                         divided_only=noise is not None)
    judged, names = finish(rows, confidence, min_effect)
    result = Judged("runs", labels, [_run_id(r) for r in a], [_run_id(r) for r in b],
                    confidence, min_effect, judged, names, problems, notes, described)
    if slo is not None:
        result.slo = {side: [(_run_id(r), check(r, slo).verdict) for r in runs]
                      for side, runs in (("A", a), ("B", b))}
    return result


_TESTED = ("paired-log", "welch-log", "pooled-log")


def _spread(xa: list[float], xb: list[float], paired: bool
            ) -> tuple[float, float, float, float] | None:
    """(log ratio, variance, its degrees of freedom, se^2 / variance) of one row's runs."""
    la, lb = [math.log(x) for x in xa], [math.log(x) for x in xb]
    if paired:
        diffs = [y - x for x, y in zip(la, lb, strict=True)]
        k = len(diffs)
        if k < 2:
            return None
        d = sum(diffs) / k
        return d, sum((x - d) ** 2 for x in diffs) / (k - 1), k - 1.0, 1.0 / k
    ka, kb = len(la), len(lb)
    if ka + kb < 3 or not ka or not kb:
        return None
    ma, mb = sum(la) / ka, sum(lb) / kb
    ss = sum((v - ma) ** 2 for v in la) + sum((v - mb) ** 2 for v in lb)
    df = ka + kb - 2.0
    return mb - ma, ss / df, df, 1.0 / ka + 1.0 / kb


def moderated(rows: Sequence[JudgedRow], pairs: list[tuple[int, int]] | None,
              confidence: float, divided_only: bool = False) -> list[JudgedRow]:
    """The tested rows again with a moderated t (harness.stats.moderated): each
    percentile's rows lend each other their spread (rows divided by a control apart from
    the others, in units of each row's sampling variance). Rows of too small a table keep
    their own test. ``divided_only``: only the rows divided by a control (the others are
    calibrated)."""
    from scipy import stats as sps

    spreads: dict[int, tuple[float, float, float, float]] = {}
    strata: dict[tuple[float, bool, bool], list[int]] = {}
    for i, r in enumerate(rows):
        if r.method not in _TESTED or (divided_only and r.control is None):
            continue
        xa, xb = _usable(r.a_runs, r.b_runs, pairs)
        got = _spread(xa, xb, pairs is not None)
        if got is not None:
            spreads[i] = got
            # divided rows, in units of their sampling variance, are alike across
            # percentiles and kinds (spread / sampling variance 0.3-1.5 by series on the A/A
            # sessions): one stratum, so one model judged against controls has a prior
            key = (0.0, False, True) if r.control is not None \
                else (r.percentile, r.series.metric == "stage", False)
            strata.setdefault(key, []).append(i)
    out = list(rows)
    for (*_, by_control), members in strata.items():
        floors = [rows[i].sampling_var or 0.0 for i in members]
        # rows divided by a control: their spread is mostly the samples' own, so the prior is
        # fitted to each row's spread over its sampling variance (rows of unlike kinds, fetch
        # and infer, then alike); the others': the machine's, fitted as they are
        unit = floors if by_control and all(f > 0 for f in floors) else [1.0] * len(members)
        fitted = prior([spreads[i][1] / u for i, u in zip(members, unit, strict=True)],
                       [spreads[i][2] for i in members])
        for i, u, floor in zip(members, unit, floors, strict=True):
            d, s2, df, scale = spreads[i]
            if fitted is None and s2 >= floor:  # too small a table: the row's own test
                continue
            var, mdf = moderate(s2 / u, df, *fitted) if fitted is not None else (s2 / u, df)
            var *= u
            if u == 1.0:
                # never below what the runs' own samples put into the spread: three rounds
                # that agree by chance must not make a row surer than its samples allow
                # (a scaled row's prior already sits on that scale)
                var = max(var, floor)
            se = math.sqrt(var * scale)
            t = float(sps.t.ppf(0.5 + confidence / 2, mdf))
            p = float(2 * sps.t.sf(abs(d) / se, mdf)) if se > 0 else (1.0 if d == 0 else 0.0)
            out[i] = replace(rows[i], ratio=math.exp(d), low=math.exp(d - t * se),
                             high=math.exp(d + t * se), p_value=p, df=mdf,
                             method=("moderated-" if fitted is not None else "")
                             + rows[i].method)
    return out
