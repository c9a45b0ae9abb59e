"""Change rules that need no stage times: the service's CPU per request (psutil) split by
the profile's stage shares, and the time requests spend awaiting with the event loop idle.

A service without Server-Timing or traces still shows *what kind* of time grew: more CPU
per request (the model, the encoder, its own code: the profile's stages say which), or the
same CPU and longer waits (an awaited store or upstream got slower). Registered in the
``change`` book after ``change``; thresholds and their reasons:
``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.deltas import ChangeFacts, Delta, describe
from harness.analysis.diagnosis.facts import Facts, stage_layer
from harness.analysis.diagnosis.measures import (
    awaited_us,
    cpu_per_request_ms,
    oncpu_ratio,
    service_saturated,
)
from harness.analysis.diagnosis.processes import cpu_saturation
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    AWAIT_BUSY_GROWTH,
    AWAIT_MIN_US,
    CAUSE_SHARE,
    CHANGE_PROFILE_MIN_SAMPLES,
    CPU_GROWTH,
    CPU_GROWTH_MIN_MS,
    GROWTH_WARNING,
    LOOP_BLOCKED_WARNING,
    ONCPU_WAITING,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__ = ["loop_queue_cause", "stage_cpu_growth"]


def stage_cpu_growth(run: Facts, baseline: Facts, ca: float, cb: float
                     ) -> list[tuple[str, float, float]]:
    """(stage, baseline ms, run ms) of CPU per request by profile stage, most grown first:
    each run's CPU per request (psutil) times the stage's share of its on-CPU samples."""
    pa, pb = baseline.profile, run.profile
    if pa is None or pb is None \
            or min(pa.running_total, pb.running_total) < CHANGE_PROFILE_MIN_SAMPLES:
        return []
    rows = [(s, ca * pa.running_share(s), cb * pb.running_share(s))
            for s in set(pa.running) | set(pb.running)]
    return sorted(rows, key=lambda r: -(r[2] - r[1]))


def _cpu_cause(c: ChangeFacts) -> tuple[str, float, float, float, float] | None:
    """(stage, its ms before, after, CPU per request before, after) when the CPU per request
    grew significantly and one profile stage explains CAUSE_SHARE of it."""
    ca, cb = cpu_per_request_ms(c.baseline), cpu_per_request_ms(c.run)
    if not ca or not cb or cb - ca < max(CPU_GROWTH * ca, CPU_GROWTH_MIN_MS):
        return None
    grown = stage_cpu_growth(c.run, c.baseline, ca, cb)
    if not grown or grown[0][2] - grown[0][1] < CAUSE_SHARE * (cb - ca):
        return None
    return grown[0][0], grown[0][1], grown[0][2], ca, cb


def loop_queue_cause(c: ChangeFacts, top: Delta | None, title: str
                     ) -> tuple[str, str, list[str]] | None:
    """An async service whose awaited stage grew most while the loop got busier: an awaited
    call's span includes its wait for the event loop to resume it, as queueing in front of
    a threaded service does. The cause is what made the loop busier: a profile stage whose
    CPU per request grew, else (the loop saturated now, not in the baseline) the load.
    Returns (the cause as a series key, the title, evidence), or None."""
    run = c.run
    if top is None or top.series == "residual" or run.profile is None \
            or not run.profile.loops:
        return None
    ratio = oncpu_ratio(run, top.series.partition(":")[2])
    if ratio is not None and ratio > ONCPU_WAITING:
        return None  # a computing stage grew: it is the cause itself
    cause = _cpu_cause(c)
    saturated = service_saturated(run) and not service_saturated(c.baseline)
    if cause is None and not saturated:
        return None
    head = (f"{title.split(';')[0]}, mostly in awaited '{top.series.partition(':')[2]}' "
            f"(+{_ms(top.diff_us)}): its event loop resumes awaits late")
    note = ["an awaited call's span includes its wait for the event loop to resume it: a "
            "loop that computes more per request (or is saturated) lengthens every await"]
    if cause is not None:
        stage, a, b, ca, cb = cause
        return (f"profile:{stage}", f"{head}; behind it the CPU per request grew: "
                f"'{stage}' ({stage_layer(stage)}) +{b - a:.2f} ms",
                note + [f"CPU per request {ca:.2f} -> {cb:.2f} ms (psutil); '{stage}' "
                        f"{a:.2f} -> {b:.2f} ms by the profile's shares"])
    return "residual", f"{head}; the service saturates: requests queue", note


def _saturated_now(c: ChangeFacts) -> bool:
    return cpu_saturation(c.run) is not None and cpu_saturation(c.baseline) is None


@rule("change", "cpu_growth", layer="change", uses=("resources", "profile"))
def cpu_growth(c: ChangeFacts) -> Finding | None:
    """The service's CPU per request grew: it does more work per request. The profile stage
    whose CPU per request grew most is named when it explains CAUSE_SHARE of the growth."""
    ca, cb = cpu_per_request_ms(c.baseline), cpu_per_request_ms(c.run)
    if ca is None or cb is None or cb - ca < max(CPU_GROWTH * ca, CPU_GROWTH_MIN_MS):
        return None
    grown = stage_cpu_growth(c.run, c.baseline, ca, cb)
    top = grown[0] if grown and grown[0][2] - grown[0][1] >= CAUSE_SHARE * (cb - ca) else None
    title = f"CPU per request grew {100 * (cb - ca) / ca:.0f} % ({ca:.2f} -> {cb:.2f} ms)"
    evidence = [f"the service's CPU time per request (psutil: its processes' CPU / achieved "
                f"rate): {ca:.2f} ms -> {cb:.2f} ms"]
    if top is not None:
        stage, a, b = top
        title += (f"; '{stage}' ({stage_layer(stage)}) grew most: +{b - a:.2f} ms per "
                  f"request, {fmt_pct(min(1.0, (b - a) / (cb - ca)))} of the growth")
        evidence.append("by the profile's stages (CPU per request x share of on-CPU "
                        "samples): " + ", ".join(f"{s} {x:.2f} -> {y:.2f} ms"
                                                 for s, x, y in grown[:4]))
    else:
        title += ": the service does more work per request"
        evidence.append("no profile stage explains a quarter of it" if grown else
                        "no profile of both runs with enough on-CPU samples to say which "
                        f"stage (>= {CHANGE_PROFILE_MIN_SAMPLES}; drop --no-profile, run "
                        "longer)")
    slower = c.client is not None and c.client.slower
    if c.client is not None:
        evidence.append(describe(c.client))
    saturated = _saturated_now(c)
    if saturated:
        evidence.append("the service saturates in this run and not in the baseline: the "
                        "extra work per request is why requests queue")
    severity = "warning" if slower and not c.run.stages else "info"
    return Finding(
        "critical" if saturated and severity == "warning" else severity, "change", title,
        evidence, ["compare both profiles (oncpu.speedscope.json) in that stage"],
        min(1.0, (b - a) / (cb - ca)) if top is not None else 0.5 * (cb - ca) / cb,
        {"stage": f"profile:{top[0]}" if top else None, "via": "cpu", "cpu_ms": [ca, cb]})


def _blocked(f: Facts) -> float:
    loops = f.profile.loops if f.profile else ()
    return max((lf.blocked_share or 0.0 for lf in loops), default=0.0)


def _busy(f: Facts) -> float:
    """The mean busy share (running or blocked) of the service's event loops."""
    loops = f.profile.loops if f.profile else ()
    return sum(lf.busy_share + (lf.blocked_share or 0.0) for lf in loops) / len(loops) \
        if loops else 0.0


def _io_stages(f: Facts) -> list[str]:
    p = f.profile
    if p is None:
        return []
    return sorted((s for s in p.running if stage_layer(s) == "upstream" and p.running[s]),
                  key=lambda s: -p.running[s])


@rule("change", "awaiting_growth", layer="change", uses=("profile", "resources"))
def awaiting_growth(c: ChangeFacts) -> Finding | None:
    """Latency grew, its median too, with no more CPU per request and the event loop idle:
    requests wait longer on what they await (a store, an upstream). Only without stage
    times."""
    client = c.client
    run, base = c.run, c.baseline
    if run.stages or client is None or not client.slower or not client.a_us \
            or client.diff_us is None or client.diff_us / client.a_us < GROWTH_WARNING:
        return None
    wa, wb = awaited_us(base), awaited_us(run)
    ca, cb = cpu_per_request_ms(base), cpu_per_request_ms(run)
    if wa is None or wb is None or run.client is None or base.client is None:
        return None
    mean_growth = run.client.mean_us - base.client.mean_us
    # A dependency slower for every request moves the median with the mean; bursts outside
    # the service (the machine starving the store's process or the load generator) move
    # the tail only, and an A/A pair on a crowded machine shows just that.
    median = c.deltas.get(("client", 50.0))
    if median is None or not median.slower or (median.diff_us or 0) < AWAIT_MIN_US:
        return None
    if _busy(run) - _busy(base) >= AWAIT_BUSY_GROWTH:
        return None  # the loop waited for a CPU: the machine starved the service
    if wb - wa < max(AWAIT_MIN_US, CAUSE_SHARE * mean_growth) or (
            ca and cb and cb - ca >= max(CPU_GROWTH * ca, CPU_GROWTH_MIN_MS)) \
            or _blocked(run) - _blocked(base) >= LOOP_BLOCKED_WARNING:
        return None
    io = _io_stages(run)
    title = (f"p{client.percentile:g} grew {100 * client.diff_us / client.a_us:.0f} %: "
             f"requests wait longer with the event loop idle (+{_ms(wb - wa)} per request), "
             "with no more CPU per request")
    if io:
        title += f"; the awaited I/O in its profile is '{io[0]}' ({stage_layer(io[0])})"
    return Finding(
        "warning" if io else "info", "change", title,
        [describe(client), describe(median),
         f"time per request with the loop idle (M/M/1 estimate): {_ms(wa)} -> {_ms(wb)}; "
         f"mean latency {_ms(base.client.mean_us)} -> {_ms(run.client.mean_us)}",
         f"CPU per request {ca or 0:.2f} -> {cb or 0:.2f} ms (psutil)",
         "awaited calls leave no stack in a profile: traces (harness run --traces) time the "
         "awaited call itself"],
        ["look at the feature store's or upstream's latency in both runs"],
        min(1.0, (wb - wa) / mean_growth) if mean_growth > 0 else 0.0,
        {"stage": f"profile:{io[0]}" if io else None, "via": "awaiting",
         "awaited_us": [wa, wb]})
