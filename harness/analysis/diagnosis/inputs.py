"""Diagnosis rules of the input data: the traffic's input classes and failed requests.

Input classes come from the tagged series (``input_class=...``); a class is judged against
the ``production`` class (else the most frequent), on the service's own time when the
service sends it. The data checks (drift, nulls, prediction shift) are the ``data`` book
(harness/analysis/data/findings.py). Registered in the ``single`` book; thresholds and
their reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.facts import Facts, TagFacts
from harness.analysis.diagnosis.measures import (
    class_p99,
    classes_by_key,
    is_slow_class,
    overloaded,
    reference_class,
    service_saturated,
)
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    FAILURE_CRITICAL_PCT,
    FAILURE_PCT,
    TAG_FAIL_PCT,
    TAG_MIN_COUNT,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__: list[str] = []



@rule("single", "traffic_mix", layer="input data")
def traffic_mix(f: Facts) -> list[Finding]:
    """The share of the traffic outside the reference class, null-feature classes named."""
    out = []
    for key, rows in classes_by_key(f).items():
        ref = reference_class(rows)
        odd = [t for t in rows if t is not ref]
        if not odd:
            continue
        share = sum(t.traffic_share for t in odd)
        nulls = sum(t.traffic_share for t in odd if "null" in t.value)
        out.append(Finding(
            "info", "input data", f"{fmt_pct(share)} of the traffic is not '{ref.value}' "
            f"({key})", [", ".join(f"{t.value} {fmt_pct(t.traffic_share)}" for t in rows)]
            + ([f"null-feature classes: {fmt_pct(nulls)} of the traffic"] if nulls else []),
            [], 0.0, {"key": key, "shares": {t.value: t.traffic_share for t in rows}}))
    return out


def _slow(t: TagFacts, ref: TagFacts) -> Finding | None:
    own, tp, rp = class_p99(t, ref)
    if not (is_slow_class(t, ref) and tp and rp):
        return None
    what = "service time p99" if own else "p99"
    return Finding(
        "warning", "input data", f"input class {t.value} is slow: {what} "
        f"{tp / rp:.1f}x '{ref.value}'",
        [f"{t.tag}: {what} {_ms(tp)}, {t.count} requests; {ref.tag}: {what} {_ms(rp)}"]
        + ([f"client p99 {_ms(t.p99_us)} vs {_ms(ref.p99_us)}: the queue behind the slow "
            "class delays every class"] if own else []),
        ["look at what this class does to the cost (batch size, feature defaults, "
         "out-of-range paths)"], t.traffic_share)


def _failing(t: TagFacts, ref: TagFacts) -> Finding | None:
    if t.fail_pct < TAG_FAIL_PCT:
        return None
    return Finding(
        "warning", "input data", f"input class {t.value} fails {t.fail_pct:.1f} % of its "
        "requests",
        [f"{t.tag}: {t.fail_pct:.1f} % failed of {t.count}; {ref.tag}: {ref.fail_pct:.1f} %"],
        ["check whether the service should accept or cleanly reject this input"],
        t.traffic_share * t.fail_pct / 100.0)


@rule("single", "input_class", layer="input data", uses=("stages",))
def input_class(f: Facts) -> list[Finding]:
    """An input class that is slow (p99 against the reference class) or fails often."""
    out: list[Finding] = []
    for rows in classes_by_key(f).values():
        ref = reference_class(rows)
        for t in rows:
            if t is ref or t.count < TAG_MIN_COUNT:
                continue
            out += [x for x in (_slow(t, ref), _failing(t, ref)) if x is not None]
    return out


@rule("single", "failures", layer="input data", uses=("resources", "profile"))
def failures(f: Facts) -> Finding | None:
    """Failed requests; the input data's doing when the top errors are HTTP 4xx."""
    if not f.requests or 100.0 * f.failures / f.requests < FAILURE_PCT:
        return None
    pct = 100.0 * f.failures / f.requests
    top = sorted(f.errors.items(), key=lambda kv: -kv[1])[:3]
    client_side = bool(top) and all(" 4" in f" {e}" or "HTTP 4" in e for e, _ in top)
    saturated = not client_side and (service_saturated(f) or overloaded(f))
    return Finding(
        "critical" if pct >= FAILURE_CRITICAL_PCT else "warning",
        "input data" if client_side else "infrastructure", f"{pct:.1f} % of requests failed"
        + (" under a load the service did not keep up with" if saturated else ""),
        [f"{f.failures} of {f.requests}; " + ", ".join(f"{e}: {n}" for e, n in top)]
        + ([f"the service did not keep up: {f.dropped or 0} of {f.scheduled or 0} scheduled "
            "requests never started, every user of the pool waiting for an answer, or it is "
            "saturated (see that finding): timeouts, refused connections and a store's "
            "errors under that load are its queue overflowing"] if saturated else []),
        ["read service.log for the failing requests"], pct / 100.0,
        {"saturated": saturated})
