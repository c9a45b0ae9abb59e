"""Rules that compare a run with a baseline: what changed, by how much, how sure.

Confidence intervals of a percentile difference are distribution-free: each run's
percentile gets a two-sided order-statistic interval (``stats.quantile_ci``, exact
binomial ranks) at confidence sqrt(0.95) ≈ 97.47 %; as the runs are independent,
both cover their true percentile with probability >= 95 %, and then the difference
lies in ``[lo_b - hi_a, hi_b - lo_a]``. This is conservative (wider than a bootstrap)
but needs no resampling and holds for any latency distribution. It assumes requests
within a run are exchangeable; run-to-run drift of a shared machine is not in it,
which is why a change is only a warning when it is also large (``GROWTH_WARNING``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from harness import stats
from harness.rules.facts import Facts, Finding, stage_layer

__all__ = ["CONFIDENCE", "Delta", "change_rules", "comparability", "percentile_delta",
           "tail_delta"]

CONFIDENCE = 0.95
GROWTH_WARNING = 0.25        # a significant p99 growth of the client this large is a warning
LOAD_TOLERANCE = 0.05        # users / rate may differ this much between comparable runs
FUNCTION_GROWTH = 0.05       # growth of a function's share of on-CPU samples worth listing
FUNCTION_MIN_SAMPLES = 10
TAIL_PERCENTILES = (99.0, 95.0, 90.0, 50.0)
CAUSE_SHARE = 0.25


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

    def to_dict(self) -> dict[str, object]:
        return {"series": self.series, "percentile": self.percentile, "a_us": self.a_us,
                "b_us": self.b_us, "diff_us": self.diff_us, "ci_low_us": self.low_us,
                "ci_high_us": self.high_us, "verdict": self.verdict}


def percentile_delta(series: str, a: HdrHistogram, b: HdrHistogram, p: float,
                     confidence: float = CONFIDENCE) -> Delta:
    """Difference of the p-th percentile, b - a, with a distribution-free interval."""
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
               confidence: float = CONFIDENCE) -> Delta:
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


def comparability(a: Facts, b: Facts) -> list[str]:
    """Why a run and its baseline are not the same experiment (empty when they are)."""
    problems = []
    if a.scenario_sha256 and b.scenario_sha256 and a.scenario_sha256 != b.scenario_sha256:
        problems.append(f"scenario differs: {a.scenario} ({a.scenario_sha256[:12]}) vs "
                        f"{b.scenario} ({b.scenario_sha256[:12]})")
    if a.model != b.model:
        problems.append(f"load model differs: {a.model} vs {b.model}")
    # the open model's pool of users is sized from the rate: only the rate defines its load
    # (the nominal rate: the realized schedule differs between runs by Poisson noise)
    pairs = [("target rate", a.nominal_rps, b.nominal_rps)] if a.model == b.model == "open" \
        else [("users", a.users, b.users), ("target rate", a.nominal_rps, b.nominal_rps)]
    for label, x, y in pairs:
        if (x is None) != (y is None) or (x and y and abs(x - y) > LOAD_TOLERANCE * max(x, y)):
            problems.append(f"{label} differs: {x} vs {y}")
    return problems


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000.0:.3f} ms"


def _describe(d: Delta) -> str:
    return (f"{d.series} p{d.percentile:g}: {_ms(d.a_us)} -> {_ms(d.b_us)} "
            f"({'+' if (d.diff_us or 0) >= 0 else ''}{_ms(d.diff_us)}; 95 % CI "
            f"{_ms(d.low_us)} .. {_ms(d.high_us)}: {d.verdict})")


def _series(f: Facts) -> list[str]:
    return [k for k in f.histograms if k == "client" or k == "residual" or k.startswith("stage:")]


def _function_growth(a: Facts, b: Facts) -> list[tuple[str, float, float]]:
    if a.profile is None or b.profile is None:
        return []
    ta, tb = sum(a.profile.functions.values()), sum(b.profile.functions.values())
    if not ta or not tb:
        return []
    grown = []
    for fn, n in b.profile.functions.items():
        sa, sb = a.profile.functions.get(fn, 0) / ta, n / tb
        if n >= FUNCTION_MIN_SAMPLES and sb - sa >= FUNCTION_GROWTH:
            grown.append((fn, sa, sb))
    return sorted(grown, key=lambda g: g[1] - g[2])


def change_rules(b: Facts, a: Facts) -> list[Finding]:
    """Findings about how run ``b`` differs from baseline ``a``."""
    out: list[Finding] = []
    problems = comparability(a, b)
    if problems:
        out.append(Finding("warning", "measurement", "the run and its baseline are not "
                           "comparable: differences below may come from the setup",
                           problems, ["rerun both with the same scenario and load"], 1.0,
                           {"problems": problems}))
    deltas = {(k, p): percentile_delta(k, a.histograms[k], b.histograms[k], p)
              for k in _series(b) if k in a.histograms for p in (50, 99)}
    tail = {k: tail_delta(k, a.histograms[k], b.histograms[k])
            for k in _series(b) if k in a.histograms}
    client = tail.get("client")
    median = deltas.get(("client", 50))
    if client is not None and client.verdict != "slower" and median is not None \
            and median.verdict == "slower":
        # a tail too noisy to bound on a busy machine: the median still shows a shift
        client = median
        tail = {k: d for (k, p), d in deltas.items() if p == 50}
    grew = [d for k, d in tail.items() if k not in ("client", "stage:app")
            and d.verdict == "slower"]
    evidence_all = [_describe(d) for d in deltas.values()]
    if client is not None and client.verdict == "slower" and client.diff_us:
        rel = client.diff_us / client.a_us if client.a_us else 1.0
        # Queueing (the residual) grows when the service gets slower: a service stage that
        # explains a quarter of the growth is the cause, the residual its consequence.
        inner = [d for d in grew if d.series != "residual"
                 and (d.diff_us or 0) >= CAUSE_SHARE * client.diff_us]
        if grew:
            top = max(inner or grew, key=lambda d: d.diff_us or 0)
            explained = min(1.0, max(0.0, (top.diff_us or 0) / client.diff_us))
            name = top.series.partition(":")[2] or top.series
            layer = "queueing" if top.series == "residual" else stage_layer(name)
            title = (f"p{client.percentile:g} grew {100 * rel:.0f} %; '{name}' ({layer}) "
                     f"grew most: +{_ms(top.diff_us)}, {100 * explained:.0f} % of the growth")
        else:
            top, explained = None, 0.0
            title = (f"p{client.percentile:g} grew {100 * rel:.0f} %; no single stage grew "
                     "significantly")
        out.append(Finding(
            # without a stage to blame, a shift of the whole distribution is most often the
            # machine between runs (A/A pairs on a shared machine show it): information only
            # A median-only shift (tail not bounded as grown) is info: on a shared machine A/A
            # pairs show such shifts in computing stages.
            "warning" if rel >= GROWTH_WARNING and top and client.percentile > 50 else "info",
            "change", title,
            [_describe(client)] + ([_describe(top)] if top else []) +
            [_describe(d) for d in grew if d is not top],
            ["look at that stage's layer findings below and at the profile functions that "
             "grew"], explained if top else rel,
            {"stage": top.series if top else None, "explained": explained}))
    elif client is not None and client.verdict == "faster":
        out.append(Finding("info", "change",
                           f"p{client.percentile:g} improved by {_ms(-(client.diff_us or 0))}",
                           [_describe(client)], [], 0.0))
    elif client is not None:
        out.append(Finding("info", "change",
                           f"no significant p{client.percentile:g} change ({client.verdict})",
                           [_describe(client)], [], 0.0))
    # a model only one run reports is unknown on the other side, not a change
    changed = {m: (a.model_versions[m], v) for m, v in b.model_versions.items()
               if m in a.model_versions and a.model_versions[m] != v}
    if changed:
        infer = [d for d in grew if stage_layer(d.series.partition(":")[2]) == "model"]
        out.append(Finding(
            "warning" if infer else "info", "model",
            "model version changed: " + ", ".join(f"{m} {x} -> {y}"
                                                 for m, (x, y) in sorted(changed.items())),
            ["run.json target models of both runs"] + [_describe(d) for d in infer],
            ["compare the versions' cost offline (predict_proba CPU per row)"],
            0.5 if infer else 0.0, {"versions": {m: list(v) for m, v in changed.items()}}))
    growth = _function_growth(a, b)
    if growth:
        out.append(Finding(
            "info", "change", "profile: functions whose share of on-CPU samples grew",
            [f"{fn}: {100 * sa:.1f} % -> {100 * sb:.1f} %" for fn, sa, sb in growth[:5]],
            ["open both profiles' oncpu.speedscope.json side by side"], 0.0))
    out.append(Finding("info", "change", "percentile changes per series (baseline -> run)",
                       evidence_all, [], 0.0,
                       {"deltas": [d.to_dict() for d in deltas.values()]}))
    return out
