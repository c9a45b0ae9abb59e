"""``build_sweep_report``: the HTML report of a capacity sweep (``harness report SWEEP_DIR``).

A sweep directory holds ``capacity.json`` and one run directory per step. The report is one
self-contained file, ``SWEEP_DIR/report.html``: the answer, the latency-throughput curve
(the picture perf_analyzer and Model Analyzer draw), the rates and every step with its
verdict, why it did not pass, and a link to the step's own report. The step reports are
written beside their runs when missing (``step_reports``), so the links work; the links
are relative, so the sweep directory can be moved or attached whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from harness.analysis.slo import parse_slo
from harness.report.build import build_report
from harness.report.page import Section, badge, esc, figure_html, ms, render_page, table
from harness.report.sweep_figs import achieved_figure, curve_figure
from harness.rundir import RunDir
from harness.rundir.atomic import write_text_atomic
from harness.rundir.records.capacity import CapacityResult

__all__ = ["build_sweep_report", "is_sweep_dir", "read_sweep"]

MAX_CAPACITY_JSON_BYTES = 16 * 1024 * 1024


def is_sweep_dir(path: Path) -> bool:
    """A capacity sweep's directory: capacity.json and no run.json."""
    return (path / "capacity.json").is_file() and not (path / "run.json").exists()


def read_sweep(path: Path) -> CapacityResult:
    """capacity.json of the sweep directory ``path``, checked (ValueError says where)."""
    file = path / "capacity.json"
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_CAPACITY_JSON_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{file}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CAPACITY_JSON_BYTES:
        raise ValueError(f"{file}: larger than {MAX_CAPACITY_JSON_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    return CapacityResult.from_dict(doc, path, where=str(file))


def _meta_lines(result: CapacityResult) -> list[str]:
    s = result.settings or {}
    target = s.get("target") or (f"reference service ({s.get('service_workers')} workers"
                                 + (f", faults {Path(str(s['faults'])).name}"
                                    if s.get("faults") else "") + ")"
                                 if s.get("serve") else "?")
    verdict = ("converged" if result.converged else "not converged")
    tol = s.get("tolerance")
    tolerance = f"{100 * tol:g} %" if isinstance(tol, int | float) else "?"
    return [f"{len(result.steps)} steps in {result.elapsed_s:.0f} s | {verdict} | scenario "
            f"{Path(str(s.get('scenario', '?'))).name} | target {target}",
            f"{s.get('arrival', '?')} arrivals | each step {s.get('step_s', '?')} s measured "
            f"after {s.get('warmup_s', '?')} s warm-up | tolerance {tolerance} | SLO "
            f"{s.get('slo_source') or '?'}"]


def _answer_html(result: CapacityResult) -> str:
    cap, limit = result.capacity_rps, result.limit_rps
    if cap is not None:
        head = f"<b>Capacity: {cap:g} req/s</b> meets the SLO"
        head += f"; {limit:g} req/s does not." if limit is not None else "."
    else:
        head = "<b>No rate met the SLO.</b>"
    achieved = ("Achieved: a step's intended starts in its measured window that were made "
                "(or the requests answered, when fewer), per second; it never exceeds what "
                "the window scheduled." if any(s.achieved_by for s in result.steps) else
                "Achieved: this sweep was recorded before achieved was counted by intended "
                "start; its achieved rates count requests by completion time (the warm-up's "
                "backlog included) and can exceed the rate asked.")
    lines = [head, esc(result.reason or "-"), esc(result.knee_reading()),
             achieved + " Latency is the client's, from the intended start "
             "(coordinated-omission corrected)."]
    return "".join(f"<p>{line}</p>" for line in lines) + _slo_html(result)


def _slo_html(result: CapacityResult) -> str:
    doc = (result.settings or {}).get("slo")
    if doc is None:
        return '<p class="note">The SLO is not recorded in capacity.json.</p>'
    try:
        slo = parse_slo(doc, "capacity.json: settings.slo")
    except ValueError as exc:
        return f'<p class="note">The SLO recorded in capacity.json is not valid: {esc(exc)}</p>'
    rows = [[o.subject(),
             ", ".join(f"p{p:g} <= {us / 1000:g} ms" for p, us in o.latency_us) or "-",
             "-" if o.max_error_rate is None else f"{100 * o.max_error_rate:g} %",
             "-" if o.min_throughput_rps is None else f"{o.min_throughput_rps:g} req/s"]
            for o in slo.objectives]
    return ("<h3>The SLO the steps were judged by</h3>"
            + table(["requests", "latency", "max error rate", "min throughput"], rows)
            + f'<p class="note">confidence {slo.confidence:g}: a step passes when the '
            "confidence bound of every objective meets it.</p>")


def _mark(result: CapacityResult, rate: float) -> str:
    marks = [word for word, at in (("capacity", result.capacity_rps), ("limit", result.limit_rps),
                                   ("knee", result.knee_rps)) if at == rate]
    return ", ".join(marks)


def _verdict_badge(verdict: str) -> str:
    return badge(verdict, verdict.split()[0])


def _rates_html(result: CapacityResult) -> str:
    rows = []
    for p in result.curve():
        s = p.latest
        rows.append([f"{p.rate_rps:g}", _rate(s.target_rps), _rate(s.achieved_rps),
                     ms(s.p50_us), ms(s.p90_us), ms(s.p99_us), _pct(s.error_rate),
                     _verdict_badge(p.verdict), esc(_mark(result, p.rate_rps))])
    return table(["rate asked", "scheduled/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms",
                  "errors", "verdict (passes/steps)", ""], rows, raw_columns=(7, 8),
                 left_columns=(8,))


def _steps_html(result: CapacityResult, links: dict[int, str]) -> str:
    rows = []
    for s in result.steps:
        why = "".join(f"<div>{esc(r)}</div>" for r in s.failed_rows[:3]) or "-"
        rows.append([s.index, esc(s.phase), f"{s.rate_rps:g}", _rate(s.achieved_rps),
                     ms(s.p50_us), ms(s.p99_us), _verdict_badge(s.verdict), why,
                     links.get(s.index, "-"), f"{s.elapsed_s:.0f}"])
    return table(["step", "phase", "rate", "achieved/s", "p50 ms", "p99 ms", "verdict",
                  "why not pass", "report", "s"], rows, raw_columns=(1, 6, 7, 8),
                 left_columns=(1, 7, 8))


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def _step_links(result: CapacityResult, write: bool, base: Path) -> dict[int, str]:
    """Step index -> the HTML of its report link (relative to ``base``, the directory of the
    sweep's report), writing missing reports when ``write``."""
    links = {}
    for s in result.steps:
        try:
            where = result.step_dir(s)
        except ValueError as exc:
            links[s.index] = esc(exc)
            continue
        report = where / "report.html"
        if not where.is_dir():
            links[s.index] = '<span class="note">run directory missing</span>'
            continue
        if write and not report.is_file():
            try:
                build_report(RunDir(where))
            except (ValueError, OSError) as exc:
                links[s.index] = f'<span class="note">no report: {esc(exc)}</span>'
                continue
        target = report if report.is_file() else where
        rel = Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()
        label = "report" if report.is_file() else "run directory"
        links[s.index] = f'<a href="{esc(quote(rel))}">{label}</a>'
    return links


def build_sweep_report(sweep_dir: Path, out: Path | None = None, step_reports: bool = True
                       ) -> Path:
    """Write the sweep's report (``SWEEP_DIR/report.html`` unless ``out``) and return its
    path; ``step_reports``: also write each step's report.html where it is missing."""
    result = read_sweep(Path(sweep_dir))
    path = Path(out) if out is not None else Path(sweep_dir) / "report.html"
    curve, achieved = curve_figure(result), achieved_figure(result)
    no_data = '<p class="note">No step has an achieved rate.</p>'
    sections = [
        Section("answer", "Answer", _answer_html(result)),
        Section("curve", "Latency-throughput curve",
                figure_html(curve, "curve") if curve else no_data, nav="Curve"),
        Section("rates", "Rates (each rate's latest step)", _rates_html(result), nav="Rates"),
        Section("steps", "Steps, in the order they ran",
                _steps_html(result, _step_links(result, step_reports, path.parent)),
                nav="Steps"),
        Section("achieved", "Achieved against asked",
                figure_html(achieved, "achieved") if achieved else no_data, nav="Achieved"),
    ]
    page = render_page(f"Capacity sweep {Path(sweep_dir).name}", _meta_lines(result), sections)
    write_text_atomic(path, page)
    return path
