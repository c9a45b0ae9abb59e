"""Percentile differences between a run and its baseline, and what the change rules share.

Confidence intervals of a percentile difference are distribution-free: each run's
percentile gets a two-sided order-statistic interval (``stats.quantile_ci``, exact
binomial ranks) at confidence sqrt(0.95) ≈ 97.47 %; as the runs are independent,
both cover their true percentile with probability >= 95 %, and then the difference
lies in ``[lo_run - hi_base, hi_run - lo_base]``. This is conservative (wider than a
bootstrap) but needs no resampling and holds for any latency distribution. It assumes
requests within a run are exchangeable; run-to-run drift of a shared machine is not in
it, which is why a change is only a warning when it is also large (``GROWTH_WARNING``).

Argument order: functions of two runs' facts take ``(run, baseline)``, as ``diagnose``
does. ``percentile_delta``/``tail_delta`` take histograms as ``(series, a, b)`` with
``a`` the baseline and ``b`` the run: a ``Delta`` is ``b - a``, like
``harness.stats.compare.quantile_diff`` and ``harness compare A B``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from harness import stats
from harness.analysis.diagnosis.facts import Facts
from harness.analysis.rules.thresholds import CAUSE_SHARE, CHANGE_CONFIDENCE, NAME_DOMINANCE
from harness.units import fmt_ms_unit as _ms

__all__ = ["TAIL_PERCENTILES", "ChangeFacts", "Delta", "compare_facts", "describe",
           "name_line", "percentile_delta", "tail_delta"]

TAIL_PERCENTILES = (99.0, 95.0, 90.0, 50.0)


@dataclass(frozen=True)
class Delta:
    """Change of one percentile of one series from baseline (a) to run (b), µs."""

    series: str
    percentile: float
    a_us: int | None
    b_us: int | None
    low_us: int | None
    high_us: int | None

    @property
    def diff_us(self) -> int | None:
        return None if self.a_us is None or self.b_us is None else self.b_us - self.a_us

    @property
    def verdict(self) -> str:
        if self.low_us is None or self.high_us is None:
            return "insufficient data"
        if self.low_us > 0:
            return "slower"
        if self.high_us < 0:
            return "faster"
        return "no significant difference"

    @property
    def slower(self) -> bool:
        return self.verdict == "slower"

    def to_dict(self) -> dict[str, object]:
        return {"series": self.series, "percentile": self.percentile, "a_us": self.a_us,
                "b_us": self.b_us, "diff_us": self.diff_us, "ci_low_us": self.low_us,
                "ci_high_us": self.high_us, "verdict": self.verdict}


def percentile_delta(series: str, a: HdrHistogram, b: HdrHistogram, p: float,
                     confidence: float = CHANGE_CONFIDENCE) -> Delta:
    """Difference of the p-th percentile, b (run) - a (baseline), with a distribution-free
    interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence!r})")
    na, nb = a.get_total_count(), b.get_total_count()
    pa = stats.percentiles(a, [p])[p] if na else None
    pb = stats.percentiles(b, [p])[p] if nb else None
    if not na or not nb:
        return Delta(series, p, pa, pb, None, None)
    each = math.sqrt(confidence)
    ca, cb = stats.quantile_ci(a, p, each), stats.quantile_ci(b, p, each)
    low = cb.lower_us - ca.upper_us if cb.lower_us is not None and ca.upper_us is not None \
        else None
    high = cb.upper_us - ca.lower_us if cb.upper_us is not None and ca.lower_us is not None \
        else None
    return Delta(series, p, pa, pb, low, high)


def tail_delta(series: str, a: HdrHistogram, b: HdrHistogram,
               confidence: float = CHANGE_CONFIDENCE) -> Delta:
    """The highest of p99, p95, p90, p50 whose difference both runs can bound.

    A two-sided interval of p99 needs a few hundred samples per run; a short run gets the
    highest percentile its samples support instead of "insufficient data".
    """
    last = None
    for p in TAIL_PERCENTILES:
        last = percentile_delta(series, a, b, p, confidence)
        if last.verdict != "insufficient data":
            return last
    assert last is not None
    return last



def describe(d: Delta) -> str:
    """One line of evidence: ``client p99: 8.000 ms -> 9.500 ms (+1.500 ms; 95 % CI …)``."""
    return (f"{d.series} p{d.percentile:g}: {_ms(d.a_us)} -> {_ms(d.b_us)} "
            f"({'+' if (d.diff_us or 0) >= 0 else ''}{_ms(d.diff_us)}; 95 % CI "
            f"{_ms(d.low_us)} .. {_ms(d.high_us)}: {d.verdict})")


def name_line(name: str, client: Delta, top: Delta | None) -> str:
    line = f"request '{name}': {describe(client)}"
    return line + (f"; most grown stage {describe(top)}" if top is not None else "")


def _name_changes(run: Facts, baseline: Facts) -> dict[str, tuple[Delta, Delta | None]]:
    """Per request name in both runs: its client tail change and the stage that grew most.

    Merged traffic can hide one name's change (one model version slower, the others a
    little faster, or a small share of the traffic); these are judged on their own.
    """
    out: dict[str, tuple[Delta, Delta | None]] = {}
    for name in sorted(set(baseline.by_name) & set(run.by_name)):
        ha, hb = baseline.by_name[name], run.by_name[name]
        client = tail_delta("client", ha["client"], hb["client"])
        grew = [percentile_delta(k, ha[k], hb[k], client.percentile) for k in hb
                if k.startswith("stage:") and k != "stage:app" and k in ha] \
            if client.slower else []
        top = max((d for d in grew if d.slower), key=lambda d: d.diff_us or 0, default=None)
        out[name] = (client, top)
    return out


def where_stage_grew(run: Facts, baseline: Facts, series: str, p: float
                     ) -> tuple[str, Delta] | None:
    """The request name in which ``series`` grew most, when it grew clearly most there.

    Significantly slower in that name, and by at least NAME_DOMINANCE times as much as in
    any other name: a fault in one model also slows the others that share its workers
    and CPUs, so "most" is the evidence, not "only".
    """
    a, b = baseline.by_name, run.by_name
    deltas = {n: percentile_delta(series, a[n][series], b[n][series], p)
              for n in sorted(set(a) & set(b)) if series in a[n] and series in b[n]}
    if len(deltas) < 2:
        return None
    name, best = max(deltas.items(), key=lambda nd: nd[1].diff_us or 0)
    rest = max((d.diff_us or 0 for n, d in deltas.items() if n != name), default=0)
    if not best.slower or not best.diff_us or best.diff_us < NAME_DOMINANCE * rest:
        return None
    return name, best


@dataclass(frozen=True)
class ChangeFacts:
    """A run against its baseline, as the change rules read it: the p50 and p99 deltas of
    every series both have, the tail delta per series (the median when only the median
    moved), the client's, the series that grew, and the per-request-name changes."""

    run: Facts
    baseline: Facts
    deltas: dict[tuple[str, float], Delta]
    tail: dict[str, Delta]
    client: Delta | None
    #: series other than the client and the service total that grew significantly
    grew: list[Delta]
    by_name: dict[str, tuple[Delta, Delta | None]]

    @property
    def medians(self) -> dict[str, Delta]:
        return {k: d for (k, p), d in self.deltas.items() if p == 50}

    @property
    def name_lines(self) -> list[str]:
        return [name_line(n, c, t) for n, (c, t) in self.by_name.items()]

    def behind_queueing(self) -> Delta | None:
        """When queueing dominates the growth, the stage behind the service time's growth.

        Queueing follows from a slower service (utilization = rate x service time), so when
        the service's own time (``app``) grew significantly, the stage that explains at
        least ``CAUSE_SHARE`` of that growth is the cause and the queueing its consequence.
        """
        grew, app = self.grew, self.tail.get("stage:app")
        if app is None or not app.slower or not app.diff_us or app.diff_us <= 0:
            # a service-time tail too noisy to bound (few samples, a busy machine): the
            # medians of the service time and its stages still show which stage moved
            medians = self.medians
            app = medians.get("stage:app")
            grew = [d for k, d in medians.items() if k.startswith("stage:") and k != "stage:app"
                    and d.slower]
            if app is None or not app.slower or not app.diff_us or app.diff_us <= 0:
                return None
        inside = [d for d in grew if d.series.startswith("stage:")
                  and (d.diff_us or 0) >= CAUSE_SHARE * app.diff_us]
        return max(inside, key=lambda d: d.diff_us or 0, default=None)


def _series(f: Facts) -> list[str]:
    return [k for k in f.histograms if k == "client" or k == "residual" or k.startswith("stage:")]


def compare_facts(run: Facts, baseline: Facts) -> ChangeFacts:
    """Every delta the change rules judge, computed once."""
    a, b = baseline.histograms, run.histograms
    deltas = {(k, p): percentile_delta(k, a[k], b[k], p)
              for k in _series(run) if k in a for p in (50.0, 99.0)}
    tail = {k: tail_delta(k, a[k], b[k]) for k in _series(run) if k in a}
    client = tail.get("client")
    median = deltas.get(("client", 50))
    if client is not None and not client.slower and median is not None and median.slower:
        # a tail too noisy to bound on a busy machine: the median still shows a shift
        client = median
        tail = {k: d for (k, p), d in deltas.items() if p == 50}
    grew = [d for k, d in tail.items() if k not in ("client", "stage:app") and d.slower]
    return ChangeFacts(run, baseline, deltas, tail, client, grew,
                       _name_changes(run, baseline))
