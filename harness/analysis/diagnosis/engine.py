"""`harness diagnose`: ranked findings about where a run's time went, with their evidence.

``diagnose(run, baseline=None)`` extracts the run's facts once
(``harness.analysis.diagnosis.facts.extract_facts``), runs the ``single`` book of the rule
engine (``harness.analysis.diagnosis.single``: measurement, infrastructure, stages, inputs)
and, with a baseline, the ``change`` book (``harness.analysis.diagnosis.change``) and the
data checks (the ``data`` book, ``harness.analysis.data.findings``), then ranks: severity
first (critical, warning, info), then score (the share of the latency, or of its growth,
the finding explains).
With a baseline the change findings come first within their severity, because
the question then is "what changed". What every finding means: docs/diagnose.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.data.findings import data_findings
from harness.analysis.diagnosis.change import change_rules
from harness.analysis.diagnosis.deltas import ChangeFacts, compare_facts
from harness.analysis.diagnosis.facts import Facts, extract_facts
from harness.analysis.diagnosis.single import busy_fraction, single_rules
from harness.analysis.rules import SEVERITIES, Finding
from harness.rundir import write_json_atomic

__all__ = ["DIAGNOSIS_FILE", "Diagnosis", "Finding", "diagnose", "diagnose_facts",
           "format_diagnosis", "rank", "write_diagnosis"]

DIAGNOSIS_FILE = "diagnosis.json"
DIAGNOSIS_VERSION = "1.0"


@dataclass
class Diagnosis:
    """The ranked findings of one run (and its baseline, if any)."""

    run_id: str
    baseline_id: str | None
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def top(self) -> Finding | None:
        """The first finding of the ranked list."""
        return self.findings[0] if self.findings else None

    @property
    def primary(self) -> Finding | None:
        """The answer to "where did the time go": the first finding outside the
        measurement layer (measurement findings say how far to trust the answer) that is
        not a record (``data["record"]``: the model versions served). None when nothing
        localizes: a run with client latency only says so in its measurement findings."""
        return next((f for f in self.findings if f.layer != "measurement"
                     and not f.data.get("record")), None)

    def to_dict(self) -> dict[str, Any]:
        primary = self.primary
        return {"schema_version": DIAGNOSIS_VERSION, "run_id": self.run_id,
                "primary": self.findings.index(primary) if primary else None,
                "baseline_id": self.baseline_id, "generated_at": round(time.time(), 3),
                "findings": [f.to_dict() for f in self.findings], "facts": self.facts,
                "warnings": list(self.warnings)}


def rank(findings: list[Finding], change_first: bool = False) -> list[Finding]:
    """Severity, then (with a baseline) change findings, then the findings that name a
    cause before those that say nothing coincides with what they saw (``data.unexplained``:
    a client tail with no cause in the run), then score; stable otherwise."""
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (
        order[f.severity], 0 if change_first and f.layer in ("change", "model") else 1,
        1 if (f.data or {}).get("unexplained") else 0, -f.score))


def _headline(f: Facts) -> dict[str, Any]:
    """The few facts worth keeping beside the findings in diagnosis.json."""
    return {"model": f.model, "requests": f.requests, "failures": f.failures,
            "duration_s": f.duration_s, "achieved_rps": f.achieved_rps,
            "target_rps": f.target_rps,
            "client_p99_us": f.client.p99_us if f.client else None,
            "shares": {**{k: s.share for k, s in f.stages.items()},
                       **({"residual": f.residual.share} if f.residual else {})},
            "busy": busy_fraction(f), "system_cpu_mean_pct": f.system_cpu_mean_pct,
            "model_versions": dict(f.model_versions)}


def diagnose_facts(run: Facts, baseline: Facts | None = None) -> list[Finding]:
    """All findings for already extracted facts, ranked (the pure core of ``diagnose``)."""
    findings = single_rules(run)
    if baseline is not None:
        findings = standing(findings, single_rules(baseline), compare_facts(run, baseline),
                            baseline.run_id)
        findings += change_rules(run, baseline)
    return rank(findings, change_first=baseline is not None)


def _subject(f: Finding) -> tuple[Any, ...]:
    data = f.data or {}
    return (data.get("rule"), f.layer, data.get("stage"), data.get("tag"), data.get("name"))


def standing(run: list[Finding], baseline: list[Finding], change: ChangeFacts,
             baseline_id: str) -> list[Finding]:
    """Against a baseline the question is what changed. A warning of this run about a
    condition that did not change is information here, saying why: the baseline has the
    same finding (the same rule about the same stage, class or request name), or the
    finding is about a stage whose tail did not grow significantly against the baseline
    (a threshold one run crossed and the other did not, by noise), or about the client's
    tail when the client's tail did not grow significantly or nothing in the run explains
    it (as the change finding without a stage to blame: information). Criticals stay."""
    before = {_subject(f) for f in baseline if f.severity != "info"}
    out = []
    for f in run:
        why = None
        stage = (f.data or {}).get("stage")
        tail = change.tail.get(f"stage:{stage}") if isinstance(stage, str) else None
        if f.severity != "warning" or f.layer == "measurement":
            pass
        elif _subject(f) in before:
            why = f"the baseline ({baseline_id}) has this finding too: a standing condition"
        elif tail is not None and not tail.slower:
            why = (f"'{stage}' p{tail.percentile:g} did not grow significantly against the "
                   f"baseline ({baseline_id}): {tail.verdict}")
        elif (f.data or {}).get("rule") == "client_tail" and change.client is not None \
                and not change.client.slower:
            why = (f"the client's p{change.client.percentile:g} did not grow significantly "
                   f"against the baseline ({baseline_id}): {change.client.verdict}")
        elif (f.data or {}).get("rule") == "client_tail" and (f.data or {}).get("unexplained"):
            why = (f"nothing in this run explains the tail, and against the baseline "
                   f"({baseline_id}) a tail that grew with no stage or cause to show for it is "
                   "most often the machine between the runs (the change finding says by how "
                   "much)")
        if why is not None:
            f = Finding("info", f.layer, f.title, f.evidence + [why + ", not what changed"],
                        f.next_steps, f.score, {**f.data, "standing": True})
        out.append(f)
    return out


def diagnose(run: Any, baseline: Any | None = None) -> Diagnosis:
    """Diagnose a run directory (``RunDir``), optionally against a baseline run.

    Raises ``harness.rundir.RunDirError`` for an unreadable run directory.
    """
    facts = extract_facts(run, per_name=baseline is not None)
    base = extract_facts(baseline, per_name=True) if baseline is not None else None
    warnings = list(run.warnings) + (list(baseline.warnings) if baseline is not None else [])
    findings = diagnose_facts(facts, base)
    try:
        # The input-data layer: drift, nulls and prediction shift of the recorded traffic
        # and the service's prediction histograms (harness/analysis/data/).
        extra = data_findings(run.path, baseline.path if baseline is not None else None)
    except Exception as exc:  # the latency diagnosis stands without the data checks
        extra = []
        warnings.append(f"data checks skipped: {exc}")
    if extra:
        findings = rank(findings + extra, change_first=base is not None)
    return Diagnosis(facts.run_id, base.run_id if base else None, findings,
                     _headline(facts), warnings)


def write_diagnosis(diagnosis: Diagnosis, run_dir: Path) -> Path:
    """Write diagnosis.json into the run directory (atomically); returns its path."""
    path = Path(run_dir) / DIAGNOSIS_FILE
    write_json_atomic(path, diagnosis.to_dict())
    return path


_MARK = {"critical": "✗✗", "warning": "! ", "info": "i "}


def format_diagnosis(d: Diagnosis) -> list[str]:
    """Findings as text: severity, layer, title, evidence, next steps."""
    head = f"diagnosis of {d.run_id}" + (f" against baseline {d.baseline_id}"
                                         if d.baseline_id else "")
    counts = {s: sum(f.severity == s for f in d.findings) for s in SEVERITIES}
    lines = [head, ", ".join(f"{n} {s}" for s, n in counts.items()), ""]
    if not d.findings:
        lines.append("no findings")
    for i, f in enumerate(d.findings, start=1):
        lines.append(f"{i:>2}. {_MARK[f.severity]} {f.severity.upper():<8} [{f.layer}] {f.title}")
        for e in f.evidence:
            lines.append(f"      - {e}")
        for s in f.next_steps:
            lines.append(f"      > {s}")
    for w in d.warnings:
        lines.append(f"warning: {w}")
    return lines
