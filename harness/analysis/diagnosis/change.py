"""Rules that compare a run with a baseline (the ``change`` book): what changed, by how
much, how sure.

``change_rules(run, baseline)`` computes every delta once (``deltas.compare_facts``)
and runs the rules registered with ``@rule("change", id, layer)`` on it, in the order
they are defined here. Intervals and the argument order: ``harness.analysis.diagnosis.
deltas``; thresholds and their reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

import dataclasses

from harness.analysis.diagnosis import change_work  # noqa: F401  (its rules join the book)
from harness.analysis.diagnosis.deltas import (
    ChangeFacts,
    Delta,
    compare_facts,
    describe,
    name_line,
    percentile_delta,
    tail_delta,
    where_stage_grew,
)
from harness.analysis.diagnosis.evidence import run_annotated
from harness.analysis.diagnosis.facts import Facts, TagFacts, stage_layer
from harness.analysis.diagnosis.measures import (
    busy_fraction,
    cpu_per_request_ms,
    machine_contended,
    oncpu_ratio,
    slow_classes,
)
from harness.analysis.rules import Finding, book, rule
from harness.analysis.rules.thresholds import (
    BUSY_SATURATED,
    CAUSE_SHARE,
    CHANGE_CONFIDENCE,
    CPU_GROWTH,
    CPU_GROWTH_MIN_MS,
    FUNCTION_GROWTH,
    FUNCTION_MIN_SAMPLES,
    GROWTH_WARNING,
    LOAD_TOLERANCE,
    ONCPU_COMPUTE,
)
from harness.units import fmt_ms_unit as _ms

__all__ = ["BOOK", "CONFIDENCE", "Delta", "change_rules", "comparability",
           "cpu_per_request_ms", "percentile_delta", "tail_delta"]

BOOK = book("change")
CONFIDENCE = CHANGE_CONFIDENCE



def change_rules(run: Facts, baseline: Facts) -> list[Finding]:
    """Findings about how ``run`` differs from ``baseline``, in the book's order."""
    return run_annotated(BOOK.rules, compare_facts(run, baseline), run.evidence)


def comparability(run: Facts, baseline: Facts) -> list[str]:
    """Why a run and its baseline are not the same experiment (empty when they are).
    Each problem reads baseline first: ``users differs: 4 vs 8``."""
    a, b = baseline, run
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


@rule("change", "not_comparable", layer="measurement")
def not_comparable(c: ChangeFacts) -> Finding | None:
    """The run and its baseline differ in scenario, load model, users or rate."""
    problems = comparability(c.run, c.baseline)
    if not problems:
        return None
    return Finding("warning", "measurement", "the run and its baseline are not comparable: "
                   "differences below may come from the setup", problems,
                   ["rerun both with the same scenario and load"], 1.0, {"problems": problems})


def _name(d: Delta) -> str:
    return d.series.partition(":")[2] or d.series


def _blame(c: ChangeFacts, client: Delta, rel: float
           ) -> tuple[Delta | None, float, str, Delta | None]:
    """(the series to blame, the share of the growth it explains, the title, the stage
    behind the queueing when the blame went through the residual)."""
    if not c.grew:
        return None, 0.0, (f"p{client.percentile:g} grew {100 * rel:.0f} %; no single stage "
                           "grew significantly"), None
    growth = client.diff_us or 1
    # Queueing (the residual) grows when the service gets slower: a service stage that
    # explains a quarter of the growth is the cause, the residual its consequence.
    inner = [d for d in c.grew if d.series != "residual"
             and (d.diff_us or 0) >= CAUSE_SHARE * growth]
    top = max(inner or c.grew, key=lambda d: d.diff_us or 0)
    explained = min(1.0, max(0.0, (top.diff_us or 0) / growth))
    name = top.series.partition(":")[2] or top.series
    layer = "queueing" if top.series == "residual" else stage_layer(name)
    title = (f"p{client.percentile:g} grew {100 * rel:.0f} %; '{name}' ({layer}) "
             f"grew most: +{_ms(top.diff_us)}, {100 * explained:.0f} % of the growth")
    behind = c.behind_queueing() if top.series == "residual" else None
    if behind is None:
        return top, explained, title, None
    app = c.tail["stage:app"] if c.tail["stage:app"].slower else c.medians["stage:app"]
    queue, top = top, behind
    explained = min(1.0, max(0.0, (top.diff_us or 0) / (app.diff_us or 1)))
    name = top.series.partition(":")[2]
    title = (f"p{client.percentile:g} grew {100 * rel:.0f} %, mostly queueing "
             f"(+{_ms(queue.diff_us)}); behind it the service got slower: "
             f"'{name}' ({stage_layer(name)}) +{_ms(top.diff_us)}, "
             f"{100 * explained:.0f} % of the service time's growth")
    return top, explained, title, behind


def machine_explains(run: Facts, baseline: Facts) -> tuple[float, float] | None:
    """(baseline, run) CPU ms per request when the machine, not the service, explains a
    computing stage's growth: a run on a CPU-contended machine whose service did not do
    more CPU work per request (it waited for a CPU: psutil counts CPU time, not time
    runnable). None when the service's own CPU per request grew, or when unknown."""
    if not (machine_contended(baseline) or machine_contended(run)):
        return None
    ca, cb = cpu_per_request_ms(baseline), cpu_per_request_ms(run)
    if ca is None or cb is None or cb - ca >= max(CPU_GROWTH * ca, CPU_GROWTH_MIN_MS):
        return None
    return ca, cb


def _computing(c: ChangeFacts, top: Delta | None) -> bool:
    """Only a stage the profile shows computing: a waiting stage (a slow store, even one
    py-spy sees partly on-CPU on a starved machine) or an unprofiled one keeps its growth,
    a CPU-starved machine does not make a sleep longer."""
    if top is None or top.series == "residual":
        return True
    ratio = oncpu_ratio(c.run, top.series.partition(":")[2])
    return ratio is not None and ratio >= ONCPU_COMPUTE


def _new_slow_classes(c: ChangeFacts, top: Delta | None) -> list[TagFacts]:
    """Classes slow in the run and not in the baseline: the input data is the cause, the
    stage where it costs."""
    if top is None or top.series == "residual":
        return []
    known = {t.tag for t, _ in slow_classes(c.baseline)}
    return [t for t, _ in slow_classes(c.run) if t.tag not in known]


def _share(t: TagFacts) -> float:
    return t.traffic_share


def _saturated_note(c: ChangeFacts, top: Delta | None) -> list[str]:
    """A service saturated now but not in the baseline because a stage of it got slower:
    the saturation finding is the symptom, this growth its cause, so it ranks with it."""
    busy_a, busy_b = busy_fraction(c.baseline), busy_fraction(c.run)
    if top is None or top.series == "residual" or busy_b is None or busy_b < BUSY_SATURATED \
            or busy_a is None or busy_a >= BUSY_SATURATED:
        return []
    return [f"the service's workers are busy {100 * busy_b:.0f} % of the time (baseline "
            f"{100 * busy_a:.0f} %): this slower stage is why it saturates and requests queue"]


@rule("change", "growth", layer="change", uses=("stages", "resources", "profile"))
def growth(c: ChangeFacts) -> Finding | None:
    """The client's tail grew significantly: the stage that grew most, and why."""
    client = c.client
    if client is None or not client.slower or not client.diff_us:
        return None
    rel = client.diff_us / client.a_us if client.a_us else 1.0
    top, explained, title, behind = _blame(c, client, rel)
    queued = change_work.loop_queue_cause(c, top, title)
    if queued is not None:
        top = dataclasses.replace(top, series=queued[0]) if top is not None else None
        title = queued[1]
    where = where_stage_grew(c.run, c.baseline, top.series, client.percentile) \
        if top is not None and top.series != "residual" else None
    if where is not None:
        title += f"; most in request '{where[0]}' (+{_ms(where[1].diff_us)})"
    drift = machine_explains(c.run, c.baseline) if _computing(c, top) else None
    machine_note = [
        f"the service's CPU per request went {drift[0]:.1f} -> {drift[1]:.1f} ms on a "
        "CPU-contended machine: the time grew without more work, the service waited for "
        "a CPU (re-run both on a quiet machine)"] if drift else []
    new_slow = _new_slow_classes(c, top)
    if new_slow:
        title += f"; it comes from input class {max(new_slow, key=_share).value}"
        machine_note = []  # the class's own service time is slow, whatever the machine
    # Without a stage to blame, a shift of the whole distribution is most often the machine
    # between runs (A/A pairs on a shared machine show it): information only. A median-only
    # shift (tail not bounded as grown) is info: on a shared machine A/A pairs show such
    # shifts in computing stages.
    # A stage that explains less than CAUSE_SHARE of the growth is no blame: every stage grew
    # a little (a slower machine between the runs does that), information like no stage.
    spread = top is not None and explained < CAUSE_SHARE and not new_slow and not queued \
        and behind is None
    if spread and top is not None:
        title = (f"p{client.percentile:g} grew {100 * rel:.0f} %, spread over the stages: "
                 f"none explains {100 * CAUSE_SHARE:.0f} % of it ('{_name(top)}' grew most, "
                 f"{100 * explained:.0f} %)")
    severity = "warning" if rel >= GROWTH_WARNING and top and client.percentile > 50 \
        and not machine_note and not spread else "info"
    saturated = _saturated_note(c, top) if severity == "warning" else []
    return Finding(
        "critical" if saturated else severity, "change", title,
        [describe(client)] + ([describe(top)] if top else [])
        + [describe(d) for d in c.grew if d is not top] + machine_note + saturated
        + (queued[2] if queued else []) + c.name_lines,
        ["look at that stage's layer findings below and at the profile functions that grew"],
        # without a stage to blame it explains nothing: the findings that say what kind of
        # time grew (CPU per request, awaiting) rank above it
        explained if top and not spread else 0.0,
        {"stage": top.series if top else None, "explained": explained, "spread": spread,
         "via": "event loop" if queued else "residual" if behind is not None else None,
         "input_class": new_slow[0].tag if new_slow else None,  # the first, as before
         "most_in_request": where[0] if where is not None else None,
         "machine": list(drift) if drift else None})


@rule("change", "no_growth", layer="change")
def no_growth(c: ChangeFacts) -> Finding | None:
    """The client's tail improved, or did not change significantly."""
    client = c.client
    if client is None or (client.slower and client.diff_us):
        return None
    if client.verdict == "faster":
        return Finding("info", "change",
                       f"p{client.percentile:g} improved by {_ms(-(client.diff_us or 0))}",
                       [describe(client)], [], 0.0)
    return Finding("info", "change",
                   f"no significant p{client.percentile:g} change ({client.verdict})",
                   [describe(client)], [], 0.0)


@rule("change", "hidden_names", layer="change", uses=("stages",))
def hidden_names(c: ChangeFacts) -> list[Finding]:
    """A request name that got significantly slower while all traffic together did not.

    A warning under the same rule as the merged change (a tail percentile, >= 25 %
    growth, a stage to blame); otherwise information.
    """
    merged = c.client
    if merged is not None and merged.slower:
        return []
    out = []
    for name, (client, top) in c.by_name.items():
        if not client.slower or not client.diff_us or not client.a_us:
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
            [name_line(name, client, top)] + ([describe(merged)] if merged else []),
            [f"harness compare BASELINE RUN: every percentile and stage of '{name}' "
             "side by side"], explained if top is not None else rel,
            {"request": name, "stage": top.series if top is not None else None,
             "explained": explained}))
    return out


@rule("change", "model_version", layer="model", uses=("stages",))
def model_version(c: ChangeFacts) -> Finding | None:
    """A model version changed: a warning when an inference stage grew significantly.
    A model only one run reports is unknown on the other side, not a change."""
    before = c.baseline.model_versions
    changed = {m: (before[m], v) for m, v in c.run.model_versions.items()
               if m in before and before[m] != v}
    if not changed:
        return None
    infer = [d for d in c.grew if stage_layer(d.series.partition(":")[2]) == "model"]
    cpu = _model_cpu_growth(c)
    return Finding(
        "warning" if infer or cpu else "info", "model",
        "model version changed: " + ", ".join(f"{m} {x} -> {y}"
                                             for m, (x, y) in sorted(changed.items())),
        ["run.json target models of both runs"] + [describe(d) for d in infer] + cpu,
        ["compare the versions' cost offline (predict_proba CPU per row)"],
        0.5 if infer or cpu else 0.0, {"versions": {m: list(v) for m, v in changed.items()}})


def _model_cpu_growth(c: ChangeFacts) -> list[str]:
    """Without stage times: the model stage's CPU per request grew significantly (psutil
    CPU per request that grew by CPU_GROWTH, split by the profile's stage shares)."""
    ca, cb = cpu_per_request_ms(c.baseline), cpu_per_request_ms(c.run)
    if c.run.stages or ca is None or cb is None \
            or cb - ca < max(CPU_GROWTH * ca, CPU_GROWTH_MIN_MS):
        return []
    return [f"'{s}' CPU per request {a:.2f} -> {b:.2f} ms (psutil x profile share)"
            for s, a, b in change_work.stage_cpu_growth(c.run, c.baseline, ca, cb)
            if stage_layer(s) == "model" and b - a >= CAUSE_SHARE * (cb - ca)]


def function_growth(run: Facts, baseline: Facts) -> list[tuple[str, float, float]]:
    """(function, baseline share, run share) of on-CPU samples, for the functions whose
    share grew by FUNCTION_GROWTH with at least FUNCTION_MIN_SAMPLES samples, most first."""
    if baseline.profile is None or run.profile is None:
        return []
    ta, tb = sum(baseline.profile.functions.values()), sum(run.profile.functions.values())
    if not ta or not tb:
        return []
    grown = []
    for fn, n in run.profile.functions.items():
        sa, sb = baseline.profile.functions.get(fn, 0) / ta, n / tb
        if n >= FUNCTION_MIN_SAMPLES and sb - sa >= FUNCTION_GROWTH:
            grown.append((fn, sa, sb))
    return sorted(grown, key=lambda g: g[1] - g[2])


@rule("change", "profile_functions", layer="change", uses=("profile",))
def profile_functions(c: ChangeFacts) -> Finding | None:
    """Functions whose share of the on-CPU samples grew."""
    grown = function_growth(c.run, c.baseline)
    if not grown:
        return None
    return Finding(
        "info", "change", "profile: functions whose share of on-CPU samples grew",
        [f"{fn}: {100 * sa:.1f} % -> {100 * sb:.1f} %" for fn, sa, sb in grown[:5]],
        ["open both profiles' oncpu.speedscope.json side by side"], 0.0)


@rule("change", "series_table", layer="change", uses=("stages",))
def series_table(c: ChangeFacts) -> Finding:
    """Every series' p50 and p99 change, for the record."""
    return Finding("info", "change", "percentile changes per series (baseline -> run)",
                   [describe(d) for d in c.deltas.values()] + c.name_lines, [], 0.0,
                   {"deltas": [d.to_dict() for d in c.deltas.values()]})
