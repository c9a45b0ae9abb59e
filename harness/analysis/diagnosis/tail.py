"""The client's tail: a p99 (or p99.9) far above the median, and what it coincides with.

Any run has client histograms, so this rule needs nothing from the service. What the tail
coincides with is read from whatever else the run has, in this order: the service
saturated (the tail is the queue), its event loop blocked, a stage whose own p99 makes
most of the client's (stage times), a request name or input class that holds the tail,
seconds when other processes crowded the machine (the tail is the machine's); otherwise
it says what is missing to tell. Registered in the ``single`` book; thresholds and their
reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness import stats
from harness.analysis.diagnosis.facts import Facts, stage_layer
from harness.analysis.diagnosis.measures import (
    busy_fraction,
    busy_processes,
    machine_contended,
    machine_slows,
)
from harness.analysis.diagnosis.processes import cpu_saturation, event_loop_blocked
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    BUSY_SATURATED,
    CLIENT_TAIL_MIN_US,
    CLIENT_TAIL_RATIO,
    MACHINE_OTHER_SHARE,
    MACHINE_SYSTEM_PCT,
    TAIL_BURST_CONCENTRATION,
    TAIL_BURST_MIN_VALUES,
    TAIL_BURST_SHARE,
    TAIL_CLASS_CONCENTRATION,
    TAIL_OF_CLIENT,
    TAIL_RATIO,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__ = ["client_tail_in_contention", "tail_class"]

Cause = tuple[str, str, str, list[str]]  # (kind, layer, what, evidence)


def client_tail_in_contention(f: Facts) -> float | None:
    """Share of the client's values above its p99 that fell in seconds when the machine was
    busy and other processes took a large share of it, when the tail is concentrated
    there (as ``measures.tail_in_contention`` for a stage); else None."""
    values = tail = values_hot = tail_hot = 0
    for t, n, top in f.client_tail_intervals:
        values, tail = values + n, tail + top
        m = f.interval_machine.get(t)
        if m is not None and m[0] >= MACHINE_SYSTEM_PCT and m[1] >= MACHINE_OTHER_SHARE:
            values_hot, tail_hot = values_hot + n, tail_hot + top
    if tail < TAIL_BURST_MIN_VALUES or not values:
        return None
    share = tail_hot / tail
    return share if share >= TAIL_BURST_SHARE \
        and share >= TAIL_BURST_CONCENTRATION * values_hot / values else None


def tail_class(f: Facts) -> tuple[str, float, float] | None:
    """(class label, its share of the tail, its share of the traffic) for the request name
    or input class where the client's tail concentrates, or None."""
    best = None
    tail_total = sum(top for label, (_, top) in f.tail_by_class.items()
                     if label.startswith("request:"))
    for label, (n, top) in f.tail_by_class.items():
        if not tail_total or not f.requests or top < TAIL_BURST_MIN_VALUES:
            continue
        tail_share, traffic = top / tail_total, n / f.requests
        if tail_share >= TAIL_BURST_SHARE and tail_share >= TAIL_CLASS_CONCENTRATION * traffic \
                and (best is None or tail_share > best[1]):
            best = (label, tail_share, traffic)
    return best


def _stage_cause(f: Facts, p99: int) -> Cause | None:
    st = max(f.stages.values(), key=lambda s: s.p99_us or 0, default=None)
    if st is None or not st.p99_us or not st.p50_us or st.p99_us < TAIL_OF_CLIENT * p99 \
            or st.p99_us < TAIL_RATIO * st.p50_us:
        return None
    line = (f"'{st.name}' p99 {_ms(st.p99_us)} vs its p50 {_ms(st.p50_us)} "
            f"({f.evidence.stage_label}): {fmt_pct(st.p99_us / p99)} of the client p99")
    if machine_slows(f, st.name):
        # as the stage tail rule: a computing stage preempted on a crowded machine
        return ("machine", "infrastructure", f"stage '{st.name}' on a CPU-contended machine",
                [line, "other processes crowded the machine while it computed (see the "
                 "machine finding and the stage's tail finding)"])
    return ("stage", stage_layer(st.name), f"stage '{st.name}'", [line])


def _cause(f: Facts, p99: int) -> Cause | None:
    busy = busy_fraction(f)
    if (busy is not None and busy >= BUSY_SATURATED) or cpu_saturation(f) is not None:
        top = max((b.share for b in busy_processes(f)), default=busy or 0.0)
        return ("queueing", "infrastructure", "queueing in a saturated service",
                [f"the service is saturated (busy {fmt_pct(max(top, busy or 0.0))}): a "
                 "request that arrives behind others waits for all of them"])
    blocked = event_loop_blocked(f)
    if blocked is not None:
        return ("event loop", "infrastructure", "the blocked event loop",
                [f"the event loop is blocked {fmt_pct(blocked.data['blocked'])} of the time"])
    stage = _stage_cause(f, p99)
    if stage is not None:
        return stage
    cls = tail_class(f)
    if cls is not None:
        label, tail_share, traffic = cls
        kind, _, name = label.partition(":")
        return ("class", "input data" if kind == "tag" else "infrastructure",
                f"{'input class' if kind == 'tag' else 'request'} '{name}'",
                [f"'{name}' holds {fmt_pct(tail_share)} of the requests above the client p99 "
                 f"with {fmt_pct(traffic)} of the traffic"])
    burst = client_tail_in_contention(f)
    if burst is not None or machine_contended(f):
        return ("machine", "infrastructure", "a CPU-contended machine",
                [f"{fmt_pct(burst)} of the requests above p99 fell in seconds when other "
                 "processes crowded the machine (resources.csv against the interval "
                 "histograms)" if burst is not None else "other processes took a large "
                 "share of a busy machine over the window (see the machine finding)"])
    return None


@rule("single", "client_tail", layer="infrastructure", uses=("resources", "profile", "stages"))
def client_tail(f: Facts) -> Finding | None:
    """The client's p99 (or p99.9) far above its median, and what the tail coincides with."""
    c = f.client
    if c is None or not c.p50_us or not c.p99_us or c.p99_us - c.p50_us < CLIENT_TAIL_MIN_US:
        return None
    deep = c.p999_us if c.count >= stats.min_samples_for_percentile(99.9) else None
    ratio, deep_ratio = c.p99_us / c.p50_us, (deep or 0) / c.p50_us
    if c.count < stats.min_samples_for_percentile(99) or (
            ratio < CLIENT_TAIL_RATIO and deep_ratio < 2 * CLIENT_TAIL_RATIO):
        return None
    evidence = [f"client p50 {_ms(c.p50_us)}, p99 {_ms(c.p99_us)} ({ratio:.1f}x)"
                + (f", p99.9 {_ms(deep)} ({deep_ratio:.1f}x)" if deep else "")]
    cause = _cause(f, c.p99_us)
    if cause is None:
        title = (f"the client's tail: p99 {ratio:.1f}x its p50; nothing in this run's "
                 "evidence coincides with it")
        kind, layer = "unknown", "infrastructure"
    else:
        kind, layer, what, more = cause
        title = f"the client's tail: p99 {ratio:.1f}x its p50, from {what}"
        evidence += more
    return Finding(
        "info" if kind == "machine" else "warning", layer, title, evidence,
        ["read the findings it coincides with above; the interval plots in report.html show "
         "when the tail happened"],
        # a tail nothing coincides with explains nothing: a finding that names a cause (a
        # nulled feature, a slow stage) ranks above it
        0.0 if cause is None else min(1.0, (c.p99_us - c.p50_us) / c.p99_us) * 0.5,
        {"cause": kind, "ratio": ratio, "unexplained": cause is None})
