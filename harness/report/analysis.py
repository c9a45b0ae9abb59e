"""Report sections from the analysis modules: diagnosis, SLO check, comparison, self-check.

Their results are read through ``_get`` so both attribute records and dicts work.
"""

from __future__ import annotations

from typing import Any

from harness.report.page import Section, badge, esc, ms, table
from harness.rundir import RunDir
from harness.rundir.records import Summary


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _findings_html(findings: list[Any]) -> str:
    if not findings:
        return '<p class="note">No findings: nothing stood out in this run.</p>'
    out = []
    for f in findings:
        sev = str(_get(f, "severity", "info"))
        evidence = "".join(f"<li>{esc(e)}</li>" for e in _get(f, "evidence", []) or [])
        steps = "".join(f"<li>{esc(s)}</li>" for s in _get(f, "next_steps", []) or [])
        out.append(
            f'<div class="finding {esc(sev)}">{badge(sev)} <b>{esc(_get(f, "title"))}</b>'
            f' <span class="note">layer: {esc(_get(f, "layer"))}</span>'
            + (f"<div>Evidence:<ul>{evidence}</ul></div>" if evidence else "")
            + (f"<div>Next steps:<ul>{steps}</ul></div>" if steps else "") + "</div>")
    return "".join(out)


def diagnosis_section(run: RunDir, baseline: RunDir | None) -> Section:
    """The ranked findings of ``harness diagnose`` for this run (against B when given)."""
    from harness.analysis.diagnosis.engine import diagnose

    title = "Diagnosis: where did the time go?"
    try:
        result = diagnose(run, baseline)
    except (ValueError, OSError) as exc:
        return Section("diagnosis", title, f'<p class="note">diagnosis unavailable: '
                       f"{esc(exc)}</p>")
    note = (f'<p class="note">B ({esc(baseline.path.name)}) is the baseline: changes read '
            "baseline -> this run.</p>" if baseline is not None else "")
    return Section("diagnosis", title, note + _findings_html(list(_get(result, "findings", []))),
                   nav="Diagnosis")


def slo_section(run: RunDir, slo: Any, label: str = "") -> str:
    """HTML for one run's SLO check (a fragment: one or two runs share the section)."""
    from harness.analysis.slo import check

    result = check(run, slo)
    verdict = str(_get(result, "verdict", "unknown"))
    rows = []
    for r in _get(result, "rows", []) or []:
        v = str(_get(r, "verdict", ""))
        kind = str(_get(r, "kind", ""))
        rows.append([_get(r, "objective"), _slo_value(kind, _get(r, "target")),
                     _slo_value(kind, _get(r, "measured")), _slo_value(kind, _get(r, "bound")),
                     _get(r, "samples"), badge(v) if v else "",
                     _get(r, "detail") or ""])
    head = f"<h3>{esc(label)} verdict {badge(verdict)}</h3>" if label else \
        f"<p>Verdict: {badge(verdict)}</p>"
    errors = list(_get(result, "self_check_errors", []) or [])
    if errors:
        head += "<p>Self-check errors that make the verdict invalid:</p><ul>" + \
            "".join(f"<li>{esc(e)}</li>" for e in errors) + "</ul>"
    return head + table(["objective", "target", "measured", "bound", "samples", "verdict",
                         "detail"], rows, raw_columns=(5,), left_columns=(6,))


def _slo_value(kind: str, v: Any) -> str:
    """SLO rows hold latency in µs, error rates as fractions, throughput in req/s."""
    if not isinstance(v, (int, float)):
        return "-" if v is None else str(v)
    if kind == "latency":
        return f"{ms(v)} ms"
    if kind in ("error_rate", "errors", "error"):
        return f"{100 * v:.3f} %"
    if kind == "throughput":
        return f"{v:.2f} req/s"
    return f"{v:g}"


def comparison_section(a: RunDir, b: RunDir, slo: Any) -> Section:
    """harness.analysis.compare's table of differences with confidence intervals."""
    from harness.analysis.compare import compare

    title = f"Comparison: {a.path.name} (A) vs {b.path.name} (B)"
    result = compare(a, b, slo=slo)
    body = ('<p class="note">Differences are B - A with their confidence interval; the verdict '
            "says whether B is faster or slower than A.</p>")
    problems = list(_get(result, "problems", []) or [])
    if not _get(result, "comparable", True):
        body += "<p><b>These runs are not comparable:</b></p>"
    if problems:
        body += "<ul>" + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul>"
    rows = []
    for r in _get(result, "rows", []) or []:
        metric, stage = _get(r, "metric") or "", _get(r, "stage")
        stage = f"{metric} {stage}" if stage else metric
        pct = _get(r, "percentile")
        diff_pct = _get(r, "diff_pct")
        v = str(_get(r, "verdict", ""))
        kind = {"faster": "faster", "slower": "slower"}.get(v, "neutral")
        rows.append([_get(r, "name"), stage, f"p{pct:g}" if isinstance(pct, (int, float))
                     else pct, ms(_get(r, "a_us")), ms(_get(r, "b_us")), ms(_get(r, "diff_us")),
                     "-" if diff_pct is None else f"{diff_pct:+.1f} %",
                     f"[{ms(_get(r, 'ci_low_us'))}, {ms(_get(r, 'ci_high_us'))}]",
                     badge(v, kind) if v else ""])
    body += table(["request", "metric/stage", "percentile", "A ms", "B ms", "B-A ms", "B-A %",
                   "95 % CI of B-A (ms)", "verdict"], rows, left=2, raw_columns=(8,))
    return Section("comparison", title, body, nav="Comparison")


def self_check_html(summary: Summary, warnings: list[str]) -> str:
    """The summary's self-check (how far to trust the numbers) and reader warnings."""
    rows = []
    for c in summary.self_check:
        rows.append([c.check, badge("ok" if c.ok else c.severity), c.detail])
    body = table(["check", "result", "detail"], rows, raw_columns=(1,), left=3)
    if warnings:
        body += "<h3>Warnings while reading the run directory</h3><ul>" + \
            "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>"
    return body
