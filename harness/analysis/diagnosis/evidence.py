"""What evidence a run has for localizing time, and the line each finding says it with.

A run against a service the project did not write may have any subset of: client
histograms (always), Server-Timing stages (the service sends them), trace-derived stages
(``harness run --traces`` and a service exporting OpenTelemetry spans: series entries
with ``"source": "traces"``), psutil samples of the service's processes (a service on this
machine), a py-spy profile (on-CPU, and wall with ``--profile-wall``) split into stages by
a stage map, and Prometheus scrapes of its ``/metrics``; for a target on another host,
its process's CPU and memory from the ``process_*`` metrics of its ``/metrics``
(``target_metrics``) and its host's from node_exporter (``node_metrics``). Each finding
names what it used and what was missing, with how to add it (``evidence_line``); where
psutil is absent, a rule that reads process CPU (``resources``) uses ``target_metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from harness.analysis.rules import Finding, Rule

__all__ = ["HOW_TO_ADD", "KINDS", "Evidence", "annotate", "evidence_line", "missing_kinds",
           "read_evidence", "run_annotated"]

#: evidence kinds a rule can use, in the order they are named
KINDS = ("client", "server_timing", "traces", "resources", "target_metrics", "node_metrics",
         "profile", "profile_wall", "metrics")
_LABELS = {"client": "client histograms", "server_timing": "Server-Timing stages",
           "traces": "trace-derived stages", "resources": "process CPU (psutil)",
           "profile": "profile", "profile_wall": "wall profile", "metrics": "/metrics",
           "target_metrics": "target CPU from process_cpu_seconds_total of /metrics "
                             "(remote target)",
           "node_metrics": "host CPU from node_exporter"}
HOW_TO_ADD = {
    "server_timing": "send a Server-Timing header",
    "traces": "harness run --traces, the service exporting OpenTelemetry",
    "resources": "run the service on the load machine, or let its /metrics export process_*",
    "profile": "drop --no-profile",
    "profile_wall": "harness run --profile-wall",
    "node_metrics": "harness run --node-metrics URL of a node_exporter on the service's host",
}


@dataclass(frozen=True)
class Evidence:
    """The evidence kinds a run has, and a few words on each (the stage map's name...)."""

    kinds: frozenset[str]
    stage_map: str | None = None
    #: node_exporter's URL, named in the label of ``node_metrics``
    node_url: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"evidence kinds must be among {KINDS} (got {unknown})")

    def has(self, kind: str) -> bool:
        return kind in self.kinds

    @property
    def stages(self) -> str | None:
        """Where the run's stage times come from: server_timing, traces, or None."""
        return next((k for k in ("server_timing", "traces") if k in self.kinds), None)

    @property
    def stage_label(self) -> str:
        """How findings name the source of stage times."""
        return "traces" if self.stages == "traces" else "Server-Timing"

    @property
    def localizes(self) -> bool:
        """Whether anything beyond the client's view can say where the time went."""
        return bool(self.kinds & {"server_timing", "traces", "profile", "resources"})


def read_evidence(series: Iterable[Mapping[str, Any]], *, resources: bool,
                  profile_views: Iterable[str], stage_map: str | None,
                  metrics: bool, target_metrics: bool = False,
                  node_url: str | None = None) -> Evidence:
    """The evidence of a run from its series.json entries and what its collectors wrote."""
    kinds = {"client"}
    for e in series:
        if e.get("metric") == "stage":
            kinds.add("traces" if e.get("source") == "traces" else "server_timing")
    views = set(profile_views)
    if "oncpu" in views:
        kinds.add("profile")
    if "wall" in views:
        kinds.add("profile_wall")
    if resources:
        kinds.add("resources")
    if metrics:
        kinds.add("metrics")
    if target_metrics:
        kinds.add("target_metrics")
    if node_url:
        kinds.add("node_metrics")
    return Evidence(frozenset(kinds), stage_map, node_url)


def _used(ev: Evidence, uses: Iterable[str]) -> list[str]:
    out = []
    for kind in uses:
        if kind == "stages" and ev.stages:
            kind = ev.stages
        if kind == "resources" and not ev.has(kind) and ev.has("target_metrics"):
            kind = "target_metrics"  # a remote target: its own process_* stand in
        if ev.has(kind) and kind not in out:
            out.append(kind)
    return out


def _label(ev: Evidence, kind: str) -> str:
    if kind == "profile" and ev.stage_map:
        return f"profile ({ev.stage_map} stage map)"
    if kind == "node_metrics" and ev.node_url:
        return f"host CPU from node_exporter at {ev.node_url}"
    return _LABELS[kind]


def missing_kinds(ev: Evidence, uses: Iterable[str] = ()) -> list[str]:
    """The kinds that would help localize and that the run lacks: stages (both sources
    when it has neither), the profile, process CPU; the wall profile when ``uses`` asks
    for it and the run has only the on-CPU view."""
    missing = [] if ev.stages else ["server_timing", "traces"]
    missing += [k for k in ("profile", "resources") if not ev.has(k)
                and not (k == "resources" and ev.has("target_metrics"))]
    if ev.has("target_metrics") and not ev.has("resources") and not ev.has("node_metrics") \
            and "node_metrics" in uses:
        missing.append("node_metrics")
    if "profile_wall" in uses and ev.has("profile") and not ev.has("profile_wall"):
        missing.append("profile_wall")
    return missing


def evidence_line(ev: Evidence, uses: Iterable[str]) -> tuple[str, dict[str, list[str]]]:
    """``evidence: A, B; not in this run: C (how to add it)`` and the same as data.

    ``uses`` are the kinds the finding's rule reads (``stages`` meaning Server-Timing or
    traces, whichever the run has).
    """
    uses = list(uses)
    used = _used(ev, ["client", *uses])
    missing = missing_kinds(ev, uses)
    text = "evidence: " + ", ".join(_label(ev, k) for k in used)
    if missing:
        text += "; not in this run: " + ", ".join(
            f"{_LABELS[k]} ({HOW_TO_ADD[k]})" for k in missing)
    return text, {"used": used, "missing": missing}


def annotate(finding: Finding, r: Rule, ev: Evidence) -> Finding:
    """The finding with its rule's id in ``data["rule"]`` and, outside the measurement layer
    (whose findings are about the evidence itself), the evidence line appended."""
    data = {**finding.data, "rule": r.id}
    if finding.layer == "measurement" or "evidence" in finding.data \
            or finding.data.get("record"):
        return replace(finding, data=data)
    line, used = evidence_line(ev, r.uses)
    return replace(finding, evidence=[*finding.evidence, line], data={**data, "evidence": used})


def run_annotated(rules: Iterable[Rule], arg: Any, ev: Evidence) -> list[Finding]:
    """Every rule's findings on ``arg``, in order, annotated (``annotate``)."""
    return [annotate(f, r, ev) for r in rules for f in r(arg)]
