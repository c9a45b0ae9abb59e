"""Prometheus recording rules and multi-window, multi-burn-rate alerts from an SLO file.

Each SLO bound becomes an error budget over the service's own metrics (docs/monitoring.md):

- ``latency: {p99: 80ms}``: at most 1 % of requests slower than 80 ms. "Slower" is read
  from ``refsvc_request_duration_seconds_bucket`` (or ``refsvc_stage_duration_seconds``
  for a stage objective) at the largest bucket ``le <= 80 ms`` -- when the bound is not
  a bucket edge the alert is stricter than the SLO, never laxer; the rule says which
  edge it used. These are server-side times: queueing before the worker and the network
  (the harness's *residual*) are not in them.
- ``error_rate: 1%``: non-2xx responses over all responses, ``refsvc_requests_total``.
- ``min_throughput`` and ``input_class``/``tag`` objectives are load-test properties
  with no production metric: skipped and listed in the file's header comment.

Alerts follow the Google SRE workbook's multi-window, multi-burn-rate recipe for a
30-day budget: page at 14.4x over 1 h and 5 m (2 % of the budget in an hour), page at
6x over 6 h and 30 m (5 % in 6 h), ticket at 1x over 3 d and 6 h (10 % in 3 d).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from prometheus_client.utils import floatToGoString

from harness.analysis.slo.spec import Slo

__all__ = ["DEFAULT_BUCKETS_S", "BURN_ALERTS", "WINDOWS", "SloTarget", "slo_targets",
           "prometheus_rules", "render_rules"]

#: refsvc_request_duration_seconds buckets (reference_service/metrics.py LATENCY_BUCKETS)
DEFAULT_BUCKETS_S = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
                     0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: (severity, long window, short window, burn-rate factor, for)
BURN_ALERTS = (("page", "1h", "5m", 14.4, "2m"), ("page", "6h", "30m", 6.0, "15m"),
               ("ticket", "3d", "6h", 1.0, "1h"))
WINDOWS = ("5m", "30m", "1h", "6h", "3d")
JOB = "refsvc"


@dataclass(frozen=True)
class SloTarget:
    """One SLO bound as an error ratio over service metrics, with its budget."""

    slo: str
    model: str
    kind: str
    budget: float
    bad_expr: str
    total_expr: str
    description: str


def _model_of(name: str) -> str | None:
    if name == "*":
        return ".+"
    m = re.search(r"predict[ _/]+([A-Za-z0-9_.-]+)", name)
    return m.group(1) if m else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _bucket_le(bound_s: float, buckets: Sequence[float]) -> float | None:
    fit = [b for b in buckets if b <= bound_s * (1 + 1e-9)]
    return max(fit) if fit else None


def slo_targets(slo: Slo, buckets: Sequence[float] = DEFAULT_BUCKETS_S
                ) -> tuple[list[SloTarget], list[str]]:
    """The alertable targets of ``slo`` and, for the rest, why they were skipped."""
    targets: list[SloTarget] = []
    skipped: list[str] = []
    for i, o in enumerate(slo.objectives):
        who = o.subject()
        model = _model_of(o.name)
        if model is None:
            skipped.append(f"objectives[{i}] ({who}): request name has no 'predict <model>'")
            continue
        if o.tag is not None:
            skipped.append(f"objectives[{i}] ({who}): tag {o.tag} has no service metric")
        if o.min_throughput_rps is not None:
            skipped.append(f"objectives[{i}] ({who}): min_throughput is a load-test bound")
        if o.tag is not None:
            continue
        if o.metric != "client" and o.stage is None:
            skipped.append(f"objectives[{i}] ({who}): metric {o.metric} has no service metric")
            continue
        sel = f'job="{JOB}",model=~"{model}"' if model == ".+" else f'job="{JOB}",model="{model}"'
        base = "refsvc_request_duration_seconds"
        if o.stage is not None:
            base = "refsvc_stage_duration_seconds"
            sel += f',stage="{o.stage}"'
        for p, bound_us in o.latency_us:
            le = _bucket_le(bound_us / 1e6, buckets)
            name = _slug(f"{o.name if o.name != '*' else 'all'} {o.stage or ''} p{p:g}")
            if le is None:
                skipped.append(f"objectives[{i}] ({who}) p{p:g}: bound below every bucket")
                continue
            targets.append(SloTarget(
                name, model, "latency", round(1 - p / 100, 10),
                f'sum(rate({base}_bucket{{{sel},le="{floatToGoString(le)}"}}[{{w}}]))',
                f"sum(rate({base}_count{{{sel}}}[{{w}}]))",
                f"{who}: p{p:g} <= {bound_us / 1000:g} ms (measured at bucket le={le:g} s)"))
        if o.max_error_rate is not None and o.max_error_rate > 0:
            targets.append(SloTarget(
                _slug(f"{o.name if o.name != '*' else 'all'} errors"), model, "errors",
                o.max_error_rate,
                f'sum(rate(refsvc_requests_total{{{sel},status!~"2.."}}[{{w}}]))',
                f"sum(rate(refsvc_requests_total{{{sel}}}[{{w}}]))",
                f"{who}: error rate <= {100 * o.max_error_rate:g} %"))
    return targets, skipped


def _ratio_expr(t: SloTarget, window: str) -> str:
    bad = t.bad_expr.replace("{w}", window)
    total = t.total_expr.replace("{w}", window)
    if t.kind == "latency":
        # The bucket counts the *good* requests; slow = 1 - good / total.
        return f"1 - ({bad} / {total})"
    return f"({bad} / {total})"


def _record(t: SloTarget, window: str) -> str:
    return f"slo:{t.kind}_error_ratio:rate{window}"


def prometheus_rules(slo: Slo, buckets: Sequence[float] = DEFAULT_BUCKETS_S
                     ) -> tuple[dict[str, Any], list[str]]:
    """The rule file as a dict (``groups``) and the skipped objectives."""
    targets, skipped = slo_targets(slo, buckets)
    if not targets:
        raise ValueError(f"no objective of {slo.source or 'the SLO'} maps to a service metric "
                         f"({'; '.join(skipped) or 'none'})")
    records: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = [{
        "alert": "RefsvcDown", "expr": f'up{{job="{JOB}"}} == 0', "for": "1m",
        "labels": {"severity": "page"},
        "annotations": {"summary": "the model service is not answering scrapes",
                        "description": "{{ $labels.instance }} has been down for 1 minute."},
    }]
    for t in targets:
        labels = {"slo": t.slo, "slo_kind": t.kind}
        for w in WINDOWS:
            records.append({"record": _record(t, w), "expr": _ratio_expr(t, w),
                            "labels": dict(labels)})
        for severity, long_w, short_w, factor, for_ in BURN_ALERTS:
            # A large budget (a p50 bound: 50 %) cannot burn 14.4x: a ratio is <= 1. Such a
            # bound alerts when it is broken over both windows instead.
            threshold = f"{factor * t.budget:g}" if factor * t.budget < 1 else f"{t.budget:g}"
            sel = f'{{slo="{t.slo}"}}'
            alerts.append({
                "alert": f"SLOBurn_{t.slo}_{long_w}",
                "expr": f"{_record(t, long_w)}{sel} > {threshold} and "
                        f"{_record(t, short_w)}{sel} > {threshold}",
                "for": for_,
                "labels": {"severity": severity, **labels, "model": t.model
                           if t.model != ".+" else "all", "window": f"{long_w}/{short_w}"},
                "annotations": {
                    "summary": f"{t.description}: error budget burning {factor:g}x",
                    "description": f"Over {long_w} and {short_w} the bad-request ratio is "
                                   "above " + f"{factor:g} x the budget {t.budget:g} (now "
                                   "{{ $value | humanizePercentage }}): at this rate the "
                                   f"30-day budget is gone in {30 / factor:g} days.",
                },
            })
    groups = [{"name": "slo-recording", "interval": "30s", "rules": records},
              {"name": "slo-alerts", "rules": alerts}]
    return {"groups": groups}, skipped


def render_rules(slo: Slo, buckets: Sequence[float] = DEFAULT_BUCKETS_S) -> str:
    """The YAML text of the rule file, with a header naming its source and what was skipped."""
    doc, skipped = prometheus_rules(slo, buckets)
    head = [f"# Generated by `harness export prometheus-rules {slo.source or ''}`.",
            "# Check with: promtool check rules FILE"]
    head += [f"# skipped: {s}" for s in skipped]
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=100)
