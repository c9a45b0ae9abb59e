"""Verdicts of a comparison: per row, per request name, and the exit code a CI job reads.

Every row (request name x series x percentile) carries B/A with its interval and, when
it can be tested, a p-value for "no difference". The p-values of all rows form one family:
Holm's step-down method adjusts them, so the chance of any false alarm in the whole
table stays at alpha = 1 - confidence. A row is ``slower`` or ``faster`` only when its
adjusted p is <= alpha *and* B/A is beyond the practical margin ``min_effect`` (5 %: B/A
> 1.05 or < 1/1.05). With one run per side and no noise calibration nothing can be tested
against the run-to-run noise: a row whose samples differ (its within-run interval
excludes zero) is ``within run-to-run noise`` when the difference is inside the margin
and ``inconclusive`` beyond it, never ``slower``.

A request name's verdict is its worst row: slower, else inconclusive, else faster, else no
significant difference (rows without enough samples are left out; a name with no row
left is ``insufficient data``). Exit code: 0 no name slower and every name decided, 1 a
name slower beyond the margin, 2 inconclusive, insufficient data or not comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.analysis.compare.values import SeriesId
from harness.stats.runs import RatioEstimate, holm_adjusted, judge

__all__ = ["DEFAULT_MIN_EFFECT", "EXIT_INCONCLUSIVE", "EXIT_NO_REGRESSION", "EXIT_REGRESSION",
           "Judged", "JudgedRow", "NameVerdict", "finish", "row_verdict"]

# B/A beyond 1.05 (or below 1/1.05): the margin under which a difference is not reported.
# Chosen from the calibration (BENCHMARKS.md, "Comparison across runs"): see there.
DEFAULT_MIN_EFFECT = 0.05
EXIT_NO_REGRESSION, EXIT_REGRESSION, EXIT_INCONCLUSIVE = 0, 1, 2
_RANK = {"slower": 0, "inconclusive": 1, "faster": 2, "within run-to-run noise": 3,
         "no significant difference": 4}


@dataclass(frozen=True)
class JudgedRow:
    """One percentile of one series: B/A (``ratio``, interval ``low``..``high``) from the
    runs' values (µs; ``a_us``/``b_us`` their geometric means), its test, its verdict.
    ``sample_low_us``/``sample_high_us``: the within-run distribution-free interval of
    B - A (one run per side, or two names of one run), None otherwise."""

    series: SeriesId
    percentile: float
    a_runs: tuple[int | None, ...]
    b_runs: tuple[int | None, ...]
    a_n: int
    b_n: int
    ratio: float | None
    low: float | None
    high: float | None
    p_value: float | None
    df: float | None
    method: str
    sample_low_us: int | None = None
    sample_high_us: int | None = None
    p_adjusted: float | None = None
    verdict: str = "insufficient data"
    #: the request name this row's runs were divided by (a control), or None; a control's
    #: own rows have method "control" and verdict "control" (not judged)
    control: str | None = None
    #: the variance (log scale) the runs' own samples alone put into the row's spread: the
    #: floor under the moderated t's variance, or for rows divided by a control the unit
    #: their prior is fitted in (``runs.moderated``); None when unknown
    sampling_var: float | None = None

    @property
    def a_us(self) -> float | None:
        return _geomean(self.a_runs)

    @property
    def b_us(self) -> float | None:
        return _geomean(self.b_runs)

    @property
    def samples_differ(self) -> bool | None:
        if self.sample_low_us is None or self.sample_high_us is None:
            return None
        return self.sample_low_us > 0 or self.sample_high_us < 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.series.name, "metric": self.series.metric,
                "stage": self.series.stage, "percentile": self.percentile,
                "a_us": _round(self.a_us), "b_us": _round(self.b_us),
                "a_runs_us": list(self.a_runs), "b_runs_us": list(self.b_runs),
                "a_n": self.a_n, "b_n": self.b_n, "ratio": _round(self.ratio, 5),
                "low": _round(self.low, 5), "high": _round(self.high, 5),
                "p_value": self.p_value, "p_adjusted": self.p_adjusted, "df": self.df,
                "method": self.method, "sample_low_us": self.sample_low_us,
                "sample_high_us": self.sample_high_us, "verdict": self.verdict,
                "control": self.control}


def _geomean(values: Sequence[int | None]) -> float | None:
    import math

    got = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in got) / len(got)) if got else None


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


@dataclass(frozen=True)
class NameVerdict:
    """A request name's overall verdict and the rows that decided it."""

    name: str
    verdict: str
    decisive: tuple[JudgedRow, ...]
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "rows": self.rows,
                "decisive": [{"series": r.series.label, "percentile": r.percentile,
                              "ratio": _round(r.ratio, 5), "low": _round(r.low, 5),
                              "high": _round(r.high, 5), "p_adjusted": r.p_adjusted,
                              "verdict": r.verdict} for r in self.decisive]}


@dataclass
class Judged:
    """A judged comparison: ``mode`` "runs" (K >= 1 runs per side) or "names" (two request
    names of one run); ``a_runs``/``b_runs`` the runs' ids."""

    mode: str
    labels: tuple[str, str]
    a_runs: list[str]
    b_runs: list[str]
    confidence: float
    min_effect: float
    rows: list[JudgedRow]
    names: list[NameVerdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    noise: str | None = None  # what run-to-run noise the intervals include, for people
    slo: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def comparable(self) -> bool:
        return not self.problems

    @property
    def family(self) -> int:
        return sum(r.p_value is not None for r in self.rows)

    @property
    def verdict(self) -> str:
        """The worst name verdict (insufficient data counts as inconclusive)."""
        if not self.names:
            return "insufficient data"
        worst = min(self.names, key=lambda n: _RANK.get(n.verdict, 1))
        return worst.verdict

    def exit_code(self, force: bool = False) -> int:
        if not self.comparable and not force:
            return EXIT_INCONCLUSIVE
        verdicts = {n.verdict for n in self.names}
        if "slower" in verdicts:
            return EXIT_REGRESSION
        if not verdicts or verdicts & {"inconclusive", "insufficient data"}:
            return EXIT_INCONCLUSIVE
        return EXIT_NO_REGRESSION

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "labels": list(self.labels), "a_runs": self.a_runs,
                "b_runs": self.b_runs, "confidence": self.confidence,
                "min_effect": self.min_effect, "comparisons": self.family,
                "noise": self.noise, "comparable": self.comparable,
                "problems": list(self.problems), "notes": list(self.notes),
                "verdict": self.verdict, "exit_code": self.exit_code(),
                "names": [n.to_dict() for n in self.names],
                "rows": [r.to_dict() for r in self.rows],
                "slo": {side: [{"run": run, "verdict": v} for run, v in rows]
                        for side, rows in self.slo.items()}}


def row_verdict(row: JudgedRow, p_adjusted: float | None, alpha: float,
                min_effect: float) -> str:
    """The verdict of one row (see the module's docstring)."""
    if row.method == "control":
        return "control"
    if row.ratio is None:
        return "insufficient data"
    inside = 1.0 / (1.0 + min_effect) <= row.ratio <= 1.0 + min_effect
    if row.p_value is None or p_adjusted is None:
        differ = row.samples_differ
        if differ is None:  # not even the samples bound this percentile
            return "insufficient data"
        if not differ:
            return "no significant difference"
        return "within run-to-run noise" if inside else "inconclusive"
    est = RatioEstimate(row.ratio, row.low or 0.0, row.high or 0.0, row.p_value,
                        len(row.a_runs), len(row.b_runs), row.method, row.df)
    verdict = judge(est, p_adjusted <= alpha, min_effect)
    if verdict == "no significant difference" and row.method == "calibrated" \
            and row.samples_differ:
        return "within run-to-run noise"
    return verdict


def _name_verdict(name: str, rows: list[JudgedRow]) -> NameVerdict:
    decided = [r for r in rows if r.verdict != "insufficient data"]
    if not decided:
        return NameVerdict(name, "insufficient data", (), len(rows))
    verdict = min((r.verdict for r in decided), key=lambda v: _RANK.get(v, 1))
    if verdict in ("within run-to-run noise", "no significant difference"):
        verdict = "no significant difference"
        decisive = [r for r in decided if r.verdict == "within run-to-run noise"]
    else:
        decisive = [r for r in decided if r.verdict == verdict]
    decisive.sort(key=lambda r: (r.p_adjusted if r.p_adjusted is not None else 2.0,
                                 -abs((r.ratio or 1.0) - 1.0)))
    return NameVerdict(name, verdict, tuple(decisive), len(rows))


def finish(rows: Sequence[JudgedRow], confidence: float, min_effect: float
           ) -> tuple[list[JudgedRow], list[NameVerdict]]:
    """Holm over every testable row, each row's verdict, each name's verdict (in the rows'
    order of names, ``*`` last)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence!r})")
    if not 0.0 <= min_effect < 10.0:
        raise ValueError(f"min effect must be >= 0 and < 10 (a fraction: 0.05 = 5 %) "
                         f"(got {min_effect!r})")
    alpha = 1.0 - confidence
    adjusted = holm_adjusted([r.p_value for r in rows])
    judged = [replace(r, p_adjusted=adj, verdict=row_verdict(r, adj, alpha, min_effect))
              for r, adj in zip(rows, adjusted, strict=True)]
    by_name: dict[str, list[JudgedRow]] = {}
    for r in judged:
        if r.verdict != "control":  # a control's rows: the machine's drift, no verdict
            by_name.setdefault(r.series.name, []).append(r)
    order = sorted(by_name, key=lambda n: (n == "*", list(by_name).index(n)))
    return judged, [_name_verdict(n, by_name[n]) for n in order]
