"""Diagnosis rules of the service's stages: upstream, model, serialization, and the rest.

Stage names are whatever the service sends in Server-Timing; ``stage_layer`` places them
in a layer. A stage's share is judged against the service's own time (``app``): queueing
in front of the service and a CPU-starved machine inflate the client time without
changing how the service divides its own. Registered in the ``single`` book; thresholds
and their reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.facts import Facts, StageFacts, stage_layer
from harness.analysis.diagnosis.measures import (
    machine_slows,
    oncpu_ratio,
    service_share,
    tail_in_contention,
)
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    MACHINE_OTHER_SHARE,
    MACHINE_SYSTEM_PCT,
    ONCPU_COMPUTE,
    ONCPU_WAITING,
    STAGE_ASYNC_CONTENDED,
    STAGE_INFO,
    STAGE_WARNING,
    TAIL_MIN_US,
    TAIL_OF_CLIENT,
    TAIL_RATIO,
    UNATTRIBUTED_TRACES_WARNING,
    UNATTRIBUTED_WARNING,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__: list[str] = []

_LABELS = {"upstream": "feature fetch / upstream", "model": "inference",
           "serialization": "serialization"}
_STEPS = {"upstream": ["look at the feature store's latency and connection pool",
                       "cache hot entities; batch lookups"],
          "model": ["profile the model path (profile/oncpu.speedscope.json)",
                    "compare with the previous model version: harness diagnose RUN "
                    "--baseline OLD"],
          "serialization": ["check the response size and the encoder (orjson, no indent, "
                            "no debug fields)"]}



def _steps(layer: str, st: StageFacts) -> list[str]:
    return list(_STEPS.get(layer, [f"instrument '{st.name}'"]))


def _share_evidence(f: Facts, st: StageFacts, ratio: float | None) -> list[str]:
    evidence = [f"stage '{st.name}' mean {_ms(st.mean_us)}, p50 {_ms(st.p50_us)}, p99 "
                f"{_ms(st.p99_us)}; {fmt_pct(st.share)} of the summed client time "
                f"({f.evidence.stage_label}); {fmt_pct(service_share(f, st))} of the "
                "service time"]
    if ratio is not None:
        kind = ("on-CPU: it computes" if ratio >= ONCPU_COMPUTE else
                "mostly waiting (I/O, lock, GIL, or CPU it does not get)"
                if ratio <= ONCPU_WAITING else "partly on-CPU, partly waiting")
        evidence.append(f"profile: {fmt_pct(ratio)} of its wall time on-CPU — {kind}")
        tops = (f.profile.top_self.get(st.name) if f.profile else None) or []
        if tops:
            evidence.append("hottest functions: " + "; ".join(
                f"{fn} ({n} samples)" for fn, n in tops[:3]))
    return evidence


@rule("single", "stage_share", layer="upstream", uses=("stages", "profile"))
def stage_share(f: Facts) -> list[Finding]:
    """A stage's share of the service time: a warning from STAGE_WARNING, else info."""
    out = []
    for st in f.stages.values():
        layer = stage_layer(st.name)
        label = _LABELS.get(layer, "service stage")
        ratio = oncpu_ratio(f, st.name)
        warn, info = STAGE_WARNING.get(layer), STAGE_INFO.get(layer, 1.0)
        of_service = service_share(f, st)
        data = {"stage": st.name, "oncpu": ratio}
        if warn is not None and of_service >= warn:
            # an async service's awaited stage (not one that computes) on a crowded machine
            # waits for the starved loop too; a computing stage is slowed like every other
            starved = machine_slows(f, st.name) and f.profile is not None \
                and bool(f.profile.loops) and ratio is not None and ratio < ONCPU_COMPUTE \
                and of_service < STAGE_ASYNC_CONTENDED
            evidence = _share_evidence(f, st, ratio) + (
                ["the machine is CPU-contended and the service async: an awaited stage "
                 "resumes only when its starved event loop gets to it (see the machine "
                 "finding): information until it is larger than "
                 f"{fmt_pct(STAGE_ASYNC_CONTENDED)} of the service time"] if starved else [])
            out.append(Finding("info" if starved else "warning", layer,
                               f"{label} takes {fmt_pct(st.share)} of the latency", evidence,
                               _steps(layer, st), st.share, data))
        elif of_service >= info:
            out.append(Finding("info", layer, f"{label} ('{st.name}') is {fmt_pct(st.share)} "
                               "of the latency", _share_evidence(f, st, ratio),
                               _steps(layer, st), st.share, data))
    return out


@rule("single", "stage_tail", layer="upstream",
      uses=("stages", "profile", "resources"))
def stage_tail(f: Facts) -> list[Finding]:
    """A stage whose p99 is far above its median and a visible part of the client's p99."""
    out = []
    client_p99 = f.client.p99_us if f.client else None
    for st in f.stages.values():
        if not (st.p50_us and st.p99_us and client_p99 and st.p99_us >= TAIL_RATIO * st.p50_us
                and st.p99_us >= TAIL_OF_CLIENT * client_p99
                and st.p99_us - st.p50_us >= TAIL_MIN_US):
            continue
        layer = stage_layer(st.name)
        # A CPU-starved machine preempts computing stages at random: their tail is then the
        # machine's (see its finding); a waiting stage's tail stays the stage's own, except
        # in an async service, whose awaited calls resume on the starved event loop.
        in_bursts = tail_in_contention(f, st.name)
        machine_tail = machine_slows(f, st.name)
        evidence = [f"'{st.name}' p99 {_ms(st.p99_us)} vs p50 {_ms(st.p50_us)}; client p99 "
                    f"{_ms(client_p99)} ({fmt_pct(st.p99_us / client_p99)} of it)"]
        if in_bursts is not None:
            evidence.append(f"{fmt_pct(in_bursts)} of its values above p99 fell in seconds "
                            f"when the machine was busy (>= {MACHINE_SYSTEM_PCT:.0f} %) and "
                            f"other processes took >= {fmt_pct(MACHINE_OTHER_SHARE)} of it "
                            "(resources.csv against the interval histograms)")
        out.append(Finding(
            "info" if machine_tail else "warning", layer,
            f"{_LABELS.get(layer, 'service stage')} has a long tail: p99 "
            f"{st.p99_us / st.p50_us:.1f}x its p50", evidence,
            _steps(layer, st), min(1.0, st.p99_us / client_p99) * 0.5, {"stage": st.name}))
    return out


@rule("single", "unattributed", layer="infrastructure", uses=("stages",))
def unattributed(f: Facts) -> Finding | None:
    """Time inside the service (``app``) that no named stage accounts for."""
    if f.app is None or not f.stages:
        return None
    inner = sum(s.share for s in f.stages.values())
    gap = f.app.share - inner
    if gap < UNATTRIBUTED_WARNING:
        return None
    # a server span covers the framework's own work (routing, validation, middleware),
    # which a service's own Server-Timing total usually leaves out
    traces = f.evidence.stages == "traces"
    return Finding(
        "info" if traces and gap < UNATTRIBUTED_TRACES_WARNING else "warning",
        "infrastructure", f"{fmt_pct(gap)} of the latency is inside the service "
        "but in no named stage", [f"app share {fmt_pct(f.app.share)}, named stages "
                                  f"{fmt_pct(inner)} ({f.evidence.stage_label})"],
        ["add Server-Timing entries (or spans) for the unnamed part (parsing, validation, "
         "locks)"], gap)


@rule("single", "model_versions", layer="model")
def model_versions(f: Facts) -> Finding | None:
    """The model versions served (run.json), for the record."""
    if not f.model_versions:
        return None
    return Finding("info", "model", "model versions served: " + ", ".join(
        f"{k} {v}" for k, v in sorted(f.model_versions.items())),
        ["run.json target models / service options"], [], 0.0,
        {"versions": dict(f.model_versions), "record": True})
