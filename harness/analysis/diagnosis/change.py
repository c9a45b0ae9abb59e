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
from harness.analysis.diagnosis.facts import Facts, Finding, stage_layer
from harness.analysis.diagnosis.single import (
    BUSY_SATURATED,
    ONCPU_COMPUTE,
    busy_fraction,
    machine_contended,
    oncpu_ratio,
    slow_classes,
)

__all__ = ["CONFIDENCE", "Delta", "change_rules", "comparability", "percentile_delta",
           "tail_delta"]

CONFIDENCE = 0.95
GROWTH_WARNING = 0.25        # a significant p99 growth of the client this large is a warning
LOAD_TOLERANCE = 0.05        # users / rate may differ this much between comparable runs
FUNCTION_GROWTH = 0.05       # growth of a function's share of on-CPU samples worth listing
FUNCTION_MIN_SAMPLES = 10
TAIL_PERCENTILES = (99.0, 95.0, 90.0, 50.0)
CAUSE_SHARE = 0.25
NAME_DOMINANCE = 1.5  # a stage grew in one request name this many times more than elsewhere
# On a CPU-contended machine a computing stage slows down without doing more work; the
# service's CPU time per request has to grow this much (and by this many ms) for a
# computing stage's growth to be its own. psutil's CPU time per request moves by -15 % ..
# +35 % between A/A runs on a contended 2-core VM (cache pollution, steal charged to the
# running task); the injected CPU faults of the fault matrix add +37 % .. +80 %.
CPU_GROWTH = 0.50
CPU_GROWTH_MIN_MS = 0.5


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


def _behind_queueing(tail: dict[str, Delta], grew: list[Delta],
                     medians: dict[str, Delta]) -> Delta | None:
    """When queueing dominates the growth, the stage behind the service time's growth.

    Queueing follows from a slower service (utilization = rate x service time), so when
    the service's own time (``app``) grew significantly, the stage that explains at least
    ``CAUSE_SHARE`` of that growth is the cause and the queueing its consequence.
    """
    app = tail.get("stage:app")
    if app is None or app.verdict != "slower" or not app.diff_us or app.diff_us <= 0:
        # a service-time tail too noisy to bound (few samples, a busy machine): the
        # medians of the service time and its stages still show which stage moved
        app = medians.get("stage:app")
        grew = [d for k, d in medians.items() if k.startswith("stage:") and k != "stage:app"
                and d.verdict == "slower"]
        if app is None or app.verdict != "slower" or not app.diff_us or app.diff_us <= 0:
            return None
    inside = [d for d in grew if d.series.startswith("stage:")
              and (d.diff_us or 0) >= CAUSE_SHARE * app.diff_us]
    return max(inside, key=lambda d: d.diff_us or 0, default=None)


def _name_changes(a: Facts, b: Facts) -> dict[str, tuple[Delta, Delta | None]]:
    """Per request name in both runs: its client tail change and the stage that grew most.

    Merged traffic can hide one name's change (one model version slower, the others a
    little faster, or a small share of the traffic); these are judged on their own.
    """
    out: dict[str, tuple[Delta, Delta | None]] = {}
    for name in sorted(set(a.by_name) & set(b.by_name)):
        ha, hb = a.by_name[name], b.by_name[name]
        client = tail_delta("client", ha["client"], hb["client"])
        grew = [percentile_delta(k, ha[k], hb[k], client.percentile) for k in hb
                if k.startswith("stage:") and k != "stage:app" and k in ha] \
            if client.verdict == "slower" else []
        top = max((d for d in grew if d.verdict == "slower"), key=lambda d: d.diff_us or 0,
                  default=None)
        out[name] = (client, top)
    return out


def _where_stage_grew(a: Facts, b: Facts, series: str, p: float) -> tuple[str, Delta] | None:
    """The request name in which ``series`` grew most, when it grew clearly most there.

    Significantly slower in that name, and by at least NAME_DOMINANCE times as much as in
    any other name: a fault in one model also slows the others that share its workers
    and CPUs, so "most" is the evidence, not "only".
    """
    deltas = {n: percentile_delta(series, a.by_name[n][series], b.by_name[n][series], p)
              for n in sorted(set(a.by_name) & set(b.by_name))
              if series in a.by_name[n] and series in b.by_name[n]}
    if len(deltas) < 2:
        return None
    name, best = max(deltas.items(), key=lambda nd: nd[1].diff_us or 0)
    rest = max((d.diff_us or 0 for n, d in deltas.items() if n != name), default=0)
    if best.verdict != "slower" or not best.diff_us or best.diff_us < NAME_DOMINANCE * rest:
        return None
    return name, best


def _name_line(name: str, client: Delta, top: Delta | None) -> str:
    line = f"request '{name}': {_describe(client)}"
    return line + (f"; most grown stage {_describe(top)}" if top is not None else "")


def cpu_per_request_ms(f: Facts) -> float | None:
    """The service tree's CPU time per request (psutil), ms; None when unknown."""
    if not f.service_cpu_mean_pct or not f.achieved_rps:
        return None
    return f.service_cpu_mean_pct / 100.0 / f.achieved_rps * 1000.0


def _machine_explains(a: Facts, b: Facts) -> tuple[float, float] | None:
    """(baseline, run) CPU ms per request when the machine, not the service, explains a
    computing stage's growth: a run on a CPU-contended machine whose service did not do
    more CPU work per request (it waited for a CPU: psutil counts CPU time, not time
    runnable). None when the service's own CPU per request grew, or when unknown."""
    if not (machine_contended(a) or machine_contended(b)):
        return None
    ca, cb = cpu_per_request_ms(a), cpu_per_request_ms(b)
    if ca is None or cb is None or cb - ca >= max(CPU_GROWTH * ca, CPU_GROWTH_MIN_MS):
        return None
    return ca, cb


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
    by_name = _name_changes(a, b)
    name_lines = [_name_line(n, c, t) for n, (c, t) in by_name.items()]
    if client is not None and client.verdict == "slower" and client.diff_us:
        rel = client.diff_us / client.a_us if client.a_us else 1.0
        # Queueing (the residual) grows when the service gets slower: a service stage that
        # explains a quarter of the growth is the cause, the residual its consequence.
        inner = [d for d in grew if d.series != "residual"
                 and (d.diff_us or 0) >= CAUSE_SHARE * client.diff_us]
        behind = None
        if grew:
            top = max(inner or grew, key=lambda d: d.diff_us or 0)
            explained = min(1.0, max(0.0, (top.diff_us or 0) / client.diff_us))
            name = top.series.partition(":")[2] or top.series
            layer = "queueing" if top.series == "residual" else stage_layer(name)
            title = (f"p{client.percentile:g} grew {100 * rel:.0f} %; '{name}' ({layer}) "
                     f"grew most: +{_ms(top.diff_us)}, {100 * explained:.0f} % of the growth")
            medians = {k: d for (k, p), d in deltas.items() if p == 50}
            behind = _behind_queueing(tail, grew, medians) if top.series == "residual" \
                else None
            if behind is not None:
                app = tail["stage:app"] if tail["stage:app"].verdict == "slower" \
                    else medians["stage:app"]
                queue, top = top, behind
                explained = min(1.0, max(0.0, (top.diff_us or 0) / (app.diff_us or 1)))
                name = top.series.partition(":")[2]
                title = (f"p{client.percentile:g} grew {100 * rel:.0f} %, mostly queueing "
                         f"(+{_ms(queue.diff_us)}); behind it the service got slower: "
                         f"'{name}' ({stage_layer(name)}) +{_ms(top.diff_us)}, "
                         f"{100 * explained:.0f} % of the service time's growth")
        else:
            top, explained = None, 0.0
            title = (f"p{client.percentile:g} grew {100 * rel:.0f} %; no single stage grew "
                     "significantly")
        where = _where_stage_grew(a, b, top.series, client.percentile) \
            if top is not None and top.series != "residual" else None
        if where is not None:
            title += f"; most in request '{where[0]}' (+{_ms(where[1].diff_us)})"
        # only a stage the profile shows computing: a waiting stage (a slow store, even one
        # py-spy sees partly on-CPU on a starved machine) or an unprofiled one keeps its
        # growth, a CPU-starved machine does not make a sleep longer
        computing = top is None or top.series == "residual" or (
            (ratio := oncpu_ratio(b, top.series.partition(":")[2])) is not None
            and ratio >= ONCPU_COMPUTE)
        drift = _machine_explains(a, b) if computing else None
        machine_note = [
            f"the service's CPU per request went {drift[0]:.1f} -> {drift[1]:.1f} ms on a "
            "CPU-contended machine: the time grew without more work, the service waited for "
            "a CPU (re-run both on a quiet machine)"] if drift else []
        # The stage grew because one input class takes a slow path in it (slow in this run,
        # not in the baseline): the input data is the cause, the stage where it costs.
        known = {t.tag for t, _ in slow_classes(a)}
        new_slow = [(t, ref) for t, ref in slow_classes(b) if t.tag not in known] \
            if top is not None and top.series != "residual" else []
        if new_slow:
            t, ref = max(new_slow, key=lambda tr: tr[0].traffic_share)
            title += f"; it comes from input class {t.value}"
            machine_note = []  # the class's own service time is slow, whatever the machine
        severity = "warning" if rel >= GROWTH_WARNING and top and client.percentile > 50 \
            and not machine_note else "info"
        # A service saturated now but not in the baseline, because a stage of it got slower:
        # the saturation finding is the symptom, this growth its cause, so it ranks with it.
        busy_a, busy_b = busy_fraction(a), busy_fraction(b)
        saturated_note = []
        if severity == "warning" and top is not None and top.series != "residual" \
                and busy_b is not None and busy_b >= BUSY_SATURATED \
                and busy_a is not None and busy_a < BUSY_SATURATED:
            severity = "critical"
            saturated_note = [f"the service's workers are busy {100 * busy_b:.0f} % of the time "
                              f"(baseline {100 * busy_a:.0f} %): this slower stage is why it "
                              "saturates and requests queue"]
        out.append(Finding(
            # without a stage to blame, a shift of the whole distribution is most often the
            # machine between runs (A/A pairs on a shared machine show it): information only
            # A median-only shift (tail not bounded as grown) is info: on a shared machine A/A
            # pairs show such shifts in computing stages.
            severity,
            "change", title,
            [_describe(client)] + ([_describe(top)] if top else []) +
            [_describe(d) for d in grew if d is not top] + machine_note + saturated_note +
            name_lines,
            ["look at that stage's layer findings below and at the profile functions that "
             "grew"], explained if top else rel,
            {"stage": top.series if top else None, "explained": explained,
             "via": "residual" if behind is not None else None,
             "input_class": new_slow[0][0].tag if new_slow else None,
             "most_in_request": where[0] if where is not None else None,
             "machine": list(drift) if drift else None}))
    elif client is not None and client.verdict == "faster":
        out.append(Finding("info", "change",
                           f"p{client.percentile:g} improved by {_ms(-(client.diff_us or 0))}",
                           [_describe(client)], [], 0.0))
    elif client is not None:
        out.append(Finding("info", "change",
                           f"no significant p{client.percentile:g} change ({client.verdict})",
                           [_describe(client)], [], 0.0))
    if client is None or client.verdict != "slower":
        out += _hidden_name_findings(by_name, client)
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
                       evidence_all + name_lines, [], 0.0,
                       {"deltas": [d.to_dict() for d in deltas.values()]}))
    return out


def _hidden_name_findings(by_name: dict[str, tuple[Delta, Delta | None]],
                          merged: Delta | None) -> list[Finding]:
    """A request name that got significantly slower while all traffic together did not.

    A warning under the same rule as the merged change (a tail percentile, >= 25 %
    growth, a stage to blame); otherwise information.
    """
    out = []
    for name, (client, top) in by_name.items():
        if client.verdict != "slower" or not client.diff_us or not client.a_us:
            continue
        rel = client.diff_us / client.a_us
        title = (f"request '{name}' p{client.percentile:g} grew {100 * rel:.0f} % while all "
                 f"traffic together did not ({merged.verdict if merged else 'no data'})")
        explained = 0.0
        if top is not None:
            stage = top.series.partition(":")[2]
            explained = min(1.0, max(0.0, (top.diff_us or 0) / client.diff_us))
            title += (f"; '{stage}' ({stage_layer(stage)}) grew most: +{_ms(top.diff_us)}, "
                      f"{100 * explained:.0f} % of its growth")
        severity = "warning" if rel >= GROWTH_WARNING and top is not None \
            and client.percentile > 50 else "info"
        out.append(Finding(
            severity, "change", title,
            [_name_line(name, client, top)] + ([_describe(merged)] if merged else []),
            [f"harness compare BASELINE RUN: every percentile and stage of '{name}' "
             "side by side"], explained if top is not None else rel,
            {"request": name, "stage": top.series if top is not None else None,
             "explained": explained}))
    return out
