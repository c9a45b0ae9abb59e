"""Diagnosis rules of where a service's CPU and time go, from the profile when the run has
no stage times (no Server-Timing, no traces): the stage map's shares of the on-CPU
samples, the service's own hottest code, and the time requests spend awaiting.

A stage map (``python_web``: libraries to infer / fetch / serialize / framework, the
service's own files to ``own_code``) gives each on-CPU sample a stage; samples whose leaf is
a wait (a lock, a poll) are left out, as py-spy's default mode counts some idle threads as
running. Registered in the ``single`` book after ``stages``; thresholds and their reasons:
``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.facts import Facts, stage_layer
from harness.analysis.diagnosis.measures import awaited_us, cpu_per_request_ms
from harness.analysis.diagnosis.profiled import ProfileFacts, own_functions
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    AWAIT_MIN_US,
    AWAIT_SHARE,
    CPU_STAGE_INFO,
    CPU_STAGE_WARNING,
    PROFILE_MIN_SAMPLES,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__ = ["cpu_layer"]

_STEPS = {"model": "profile the model path (profile/oncpu.speedscope.json); compare model "
                   "versions: harness diagnose RUN --baseline OLD",
          "serialization": "check the response size and the encoder (orjson / pydantic's "
                           "compiled model_dump_json, no debug fields)",
          "upstream": "a store client that computes this much parses or encodes large "
                      "payloads: fetch fewer columns, batch lookups"}


def cpu_layer(stage: str) -> str:
    """The layer of a stage map's stage (``own_code``, ``framework``: infrastructure)."""
    return "own_code" if stage == "own_code" else stage_layer(stage)


def _profiled(f: Facts) -> ProfileFacts | None:
    p = f.profile
    return p if p is not None and p.running_total >= PROFILE_MIN_SAMPLES else None


def _cpu_note(f: Facts) -> str | None:
    ms = cpu_per_request_ms(f)
    if ms is None or f.service_cpu_mean_pct is None:
        return None
    return (f"the service used {f.service_cpu_mean_pct:.0f} % of a core: {ms:.2f} ms of CPU "
            "per request (psutil)")


@rule("single", "cpu_by_stage", layer="model", uses=("profile", "resources"))
def cpu_by_stage(f: Facts) -> Finding | None:
    """Where the service's CPU goes by the stage map, and its hottest functions: info,
    a warning when encoding, the store client or the service's own code take a large
    share. Only without stage times (with them, the stage findings say it)."""
    p = _profiled(f)
    if p is None or f.stages:
        return None
    ranked = sorted((s for s in p.running if p.running_share(s) >= CPU_STAGE_INFO),
                    key=lambda s: -p.running[s])
    if not ranked:
        return None
    warned = [s for s in ranked if p.running_share(s) >= CPU_STAGE_WARNING.get(
        cpu_layer(s), 2.0)]
    subject = warned[0] if warned else ranked[0]
    share, layer = p.running_share(subject), stage_layer(subject)
    evidence = [f"on-CPU samples by stage (waits excluded, {p.running_total} samples): "
                + ", ".join(f"{s} {fmt_pct(p.running_share(s))}" for s in ranked)]
    for s in ranked[:3]:
        tops = p.top_self.get(s) or []
        if tops:
            evidence.append(f"hottest in '{s}': " + "; ".join(f"{fn} ({n})" for fn, n in tops[:3]))
    evidence += [x for x in (_cpu_note(f),) if x]
    ms = cpu_per_request_ms(f)
    score = min(1.0, ms * 1000.0 / f.client.mean_us * share) if ms and f.client and \
        f.client.mean_us else 0.0
    return Finding(
        "warning" if warned else "info", layer,
        f"where the CPU goes: '{subject}' ({layer}) takes {fmt_pct(share)} of the service's "
        "on-CPU samples", evidence,
        [_STEPS.get(layer, "open profile/oncpu.speedscope.json")], score,
        {"stage": subject, "share": share, "shares": {s: p.running_share(s) for s in ranked}})


@rule("single", "own_code", layer="infrastructure", uses=("profile", "resources"))
def own_code(f: Facts) -> Finding | None:
    """The hottest code is the service's own (a function of its files that no library rule
    covers): named, with its file and share of the service's CPU."""
    p = _profiled(f)
    fns = own_functions(p) if p is not None else []
    if p is None or not fns:
        return None
    stage, fn, n = fns[0]
    share = n / p.running_total
    hottest = max(p.functions.values(), default=0) <= n
    if share < CPU_STAGE_INFO or not (hottest or share >= CPU_STAGE_WARNING["own_code"]):
        return None
    ms = cpu_per_request_ms(f)
    evidence = [f"{fn}: {n} of {p.running_total} on-CPU samples as the running (leaf) frame, "
                f"{fmt_pct(share)} of the service's CPU"
                + (f", ~{ms * share:.2f} ms per request" if ms else "")
                + (f" (stage '{stage}' of the {p.stage_map} map)" if p.stage_map else ""),
                "no Python frame runs below it: the time is its own Python code or a C "
                "extension or builtin it calls (sqlite3, a model runtime, re); "
                "py-spy record --native names the library"]
    evidence += [f"{g}: {m} samples" for _, g, m in fns[1:3]]
    return Finding(
        "warning" if share >= CPU_STAGE_WARNING["own_code"] else "info", "infrastructure",
        f"the hottest code is the service's own: {fn}, {fmt_pct(share)} of its CPU", evidence,
        ["look at this function first (profile/oncpu.speedscope.json)",
         "give it a stage in a stage map (--stage-map) to see it beside fetch and infer"],
        min(1.0, ms * 1000.0 * share / f.client.mean_us) if ms and f.client
        and f.client.mean_us else 0.0, {"function": fn, "share": share, "stage": stage})


@rule("single", "awaiting", layer="upstream", uses=("profile", "resources"))
def awaiting(f: Facts) -> Finding | None:
    """An async service's requests spend most of their latency with the loop idle:
    awaiting I/O (the store, an upstream) or outside the service. Information: without
    stage times the harness cannot time the awaited call itself."""
    waited = awaited_us(f)
    if waited is None or f.stages or f.client is None or not f.client.mean_us:
        return None
    share = waited / f.client.mean_us
    if waited < AWAIT_MIN_US or share < AWAIT_SHARE:
        return None
    p = f.profile
    io = sorted((s for s in (p.running if p else {}) if stage_layer(s) == "upstream"
                 and p and p.running.get(s)), key=lambda s: -(p.running[s] if p else 0))
    layer = "upstream" if io else "infrastructure"
    clients = "; ".join(f"{fn} ({n})" for s in io for fn, n in (p.top_self.get(s) or [])[:2]) \
        if p else ""
    return Finding(
        "info", layer, f"requests spend ~{fmt_pct(share)} of their latency awaiting "
        + ("I/O: the feature store / upstream" if io else "something outside the loop"),
        [f"mean latency {_ms(f.client.mean_us)}; ~{_ms(waited)} of it with the event loop "
         "idle (neither running nor queued for the loop: M/M/1 estimate from the loop's "
         "busy share and the throughput)"]
        + ([f"the awaited clients in the profile: {', '.join(io)} ({clients})"] if io else [])
        + ["awaited calls leave no stack in a profile: traces (harness run --traces) or "
           "Server-Timing time them; it may also be time outside the service (network, "
           "the load generator on a busy machine)"],
        ["look at the feature store's or upstream's latency"], min(1.0, share) * 0.5,
        {"awaited_us": waited, "share": share})
