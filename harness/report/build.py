"""``build_report``: one self-contained HTML file per run (or per pair of runs).

Reads only the run directory (and, with two runs, the second one), so a report can
be built later, elsewhere, from a copied or merged run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from harness.analysis.summary import remote_lines, summarize_record
from harness.report import analysis, data_table, latency_figs, process_figs
from harness.report.page import Section, esc, figure_html, ms, render_page, table
from harness.rundir import RunDir
from harness.rundir.atomic import write_text_atomic
from harness.rundir.records import RequestRow, Summary, TagRow


def run_summary(run: RunDir) -> Summary:
    """summary.json when present and readable, else computed (not written: runs may be shared)."""
    saved = run.saved_summary()
    if saved is not None:
        try:
            return Summary.from_dict(saved)
        except ValueError as exc:
            run.warnings.append(f"summary.json: {exc}; recomputed from the raw files")
    return summarize_record(run)


def _meta_lines(run: RunDir, summary: Summary) -> list[str]:
    meta = run.meta
    target = meta.get("target") or {}
    load = meta.get("load") or {}
    env = meta.get("environment") or {}
    start = (meta.get("timeline") or {}).get("load_start")
    when = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
        if isinstance(start, (int, float)) else "?"
    versions = (target.get("service_options") or {}).get("versions") or {}
    shape = (f"open model, {load.get('rate')} req/s {load.get('arrival')}"
             if load.get("model") == "open" else f"closed model, {load.get('users')} users")
    scenario = Path(str((meta.get("scenario") or {}).get("path", "?"))).name
    lines = [f"status {meta.get('status')} | started {when} | {shape} | measured "
             f"{summary.window.duration_s:.1f} s after {load.get('warmup_s')} s warm-up",
             f"scenario {scenario} | target {target.get('url', '?')}"
             + (f" ({target.get('service')})" if target.get("service") else "")
             + (" | model versions " + ", ".join(f"{k}={v}" for k, v in versions.items())
                if versions else ""),
             f"host {env.get('hostname', '?')} | {env.get('cpu_logical', '?')} CPUs "
             f"({env.get('cpu_model', '?')})"]
    return lines


def _requests_html(summary: Summary) -> str:
    metrics = [("client", "")]
    if summary.model == "open":
        metrics = [("client", " (from intended start)"),
                   ("client_uncorrected", " (uncorrected, from send)")]
    rows = []
    for metric, suffix in metrics:
        labelled: list[tuple[str, RequestRow | TagRow]] = [
            *((r.name, r) for r in summary.requests), *((t.tag, t) for t in summary.tags)]
        for label, row in labelled:
            block = row.latency.get(metric)
            if block is None:
                continue
            cells = [("~" if block.is_low(k) else "") + ms(block.percentile_us(k))
                     for k in ("p50", "p90", "p99", "p999")]
            rows.append([label + suffix, row.count,
                         "-" if row.rps is None else f"{row.rps:.2f}",
                         "-" if row.fail_pct is None else f"{row.fail_pct:.2f}",
                         *cells, ms(block.max_us)])
    body = table(["request", "count", "req/s", "fail %", "p50 ms", "p90 ms", "p99 ms",
                  "p99.9 ms", "max ms"], rows)
    lb = summary.load
    if lb.target_rps:
        by = " (intended starts made)" if lb.achieved_by == "started" else ""
        body += (f'<p class="note">target {lb.target_rps:g} req/s, achieved '
                 f'{lb.achieved_rps or 0:.2f} req/s{by}; late starts {lb.late}, '
                 f'dropped {lb.dropped}</p>')
    body += ('<p class="note">~ marks a percentile with fewer samples than a '
             f'{100 * summary.confidence:.0f} % upper bound needs.</p>')
    return body


def _breakdown_html(summary: Summary) -> str:
    block = summary.stages.get("*")
    if block is None:
        return '<p class="note">The service sent no Server-Timing stages.</p>'
    fig = latency_figs.breakdown_figure(summary)
    stages = [*block.stages, *([block.residual] if block.residual else [])]
    rows = [[st.stage or "residual", st.count, ms(st.mean_us), ms(st.p50_us), ms(st.p99_us),
             f"{100 * st.share:.1f} %"] for st in stages]
    split = block.residual_split
    note = ""
    if split is not None:
        rows += [[f"residual: {label}", "", ms(split[f"{key}_us"]), "", "",
                  f"{100 * split[f'{key}_share']:.1f} %"]
                 for label, key in (("load generator's own", "loadgen"),
                                    ("queueing, network, server", "rest"))]
        closed = split.get("closed_share")
        note = ('<p class="note">The load generator\'s own time per request was calibrated '
                "against a local echo at the run's start, on a kept-alive connection and on "
                "a new connection each"
                + ("" if closed is None else
                   f"; {100 * closed:.0f} % of the responses closed their connection, and "
                   "those requests are charged a new connection's cost") + ".</p>")
    return (figure_html(fig, "breakdown") if fig else "") + table(
        ["stage", "count", "mean ms", "p50 ms", "p99 ms", "share of client time"], rows) + note


def _errors_html(run: RunDir) -> str:
    rows = latency_figs.error_rows(run)
    if not rows:
        return '<p class="note">No failed requests in the measured window.</p>'
    return table(["request", "error", "count"], [list(r) for r in rows], left=2)


def _profile_html(run: RunDir) -> str:
    view = process_figs.profile_view(run)
    body = f'<p class="note">{esc(view.note)}</p>'
    if view.stage_shares:
        body += table(["stage (by profiler stage map)", "share of samples"],
                      [[k, f"{100 * v:.1f} %"] for k, v in sorted(
                          view.stage_shares.items(), key=lambda kv: -kv[1])])
    if view.figure is not None:
        body += figure_html(view.figure, "profile")
    if view.speedscope:
        body += (f'<p class="note">Full profile: <a href="{esc(view.speedscope)}">'
                 f"{esc(view.speedscope)}</a> (open it in speedscope; the link works while "
                 "the report sits in its run directory).</p>")
    return body


def _resources_html(run: RunDir, summary: Summary) -> str:
    """psutil's figure (this machine's processes), then a target on another host: its own
    process_* and its host's node_exporter, each figure and line naming its source."""
    res = process_figs.resources_figure(run)
    body = figure_html(res, "resources") if res else \
        '<p class="note">The run has no resources.csv.</p>'
    lines = remote_lines(summary.resources) if summary.resources is not None else []
    remote, notes = process_figs.remote_figure(run)
    if lines or remote is not None:
        body += "<h3>The target on another host</h3>" + "".join(
            f'<p class="note">{esc(line.strip())}</p>' for line in lines + notes)
    elif (run.meta.get("target") or {}).get("remote"):
        body += ('<p class="note">The target is on another host and the run has none of its '
                 "telemetry: its /metrics had no process_* and no --node-metrics was given."
                 "</p>")
    if remote is not None:
        body += figure_html(remote, "remote-resources")
    return body


def _over_time_section(run: RunDir) -> Section:
    figs = [(latency_figs.latency_over_time_figure(run), "latency"),
            (latency_figs.stages_over_time_figure(run), "stages"),
            (latency_figs.throughput_figure(run), "throughput")]
    body = "".join(figure_html(f, name) for f, name in figs if f is not None)
    return Section("over-time", "Latency over time",
                   body or '<p class="note">No interval data.</p>')


def build_report(run: RunDir, other: RunDir | None = None, slo: Any = None,
                 out: Path | None = None) -> Path:
    """Write ``report.html`` (``report-vs-<other>.html`` with two runs) and return its path.

    ``slo`` is a ``harness.analysis.slo.Slo``; ``out`` overrides where the file goes.
    """
    summary = run_summary(run)
    sections = [Section("overview", "Requests", _requests_html(summary)),
                analysis.diagnosis_section(run, other)]
    if slo is not None:
        body = analysis.slo_section(run, slo, "A" if other else "")
        if other is not None:
            body += analysis.slo_section(other, slo, "B")
        sections.append(Section("slo", "SLO check", body))
    if other is not None:
        sections.append(analysis.comparison_section(run, other, slo))
        b_body = _requests_html(run_summary(other)) + "<h3>Errors of B</h3>" + _errors_html(other)
        sections.append(Section("other-run", f"Requests of B ({other.path.name})", b_body,
                                nav="Requests of B"))
    sections.append(_over_time_section(run))
    pair = [("A", run), ("B", other)] if other is not None else [("", run)]
    spectrum = latency_figs.spectrum_figure(pair)
    sections.append(Section("spectrum", "Percentile spectrum",
                            figure_html(spectrum, "spectrum") if spectrum else
                            '<p class="note">No successful requests.</p>'))
    sections.append(Section("breakdown", "Stage breakdown", _breakdown_html(summary)))
    sections.append(Section("errors", "Errors", _errors_html(run)))
    sections.append(Section("data", "Input data", data_table.data_html(run.path)))
    sections.append(Section("resources", "CPU and memory", _resources_html(run, summary)))
    sections.append(Section("profile", "Profile", _profile_html(run)))
    sections.append(Section("self-check", "Self-check: how far to trust these numbers",
                            analysis.self_check_html(summary, run.warnings), nav="Self-check"))
    title = f"Run {run.meta.get('run_id') or run.path.name}" + \
        (f" vs {other.meta.get('run_id') or other.path.name}" if other is not None else "")
    page = render_page(title, _meta_lines(run, summary), sections)
    if out is None:
        name = "report.html" if other is None else f"report-vs-{other.path.name}.html"
        out = run.path / name
    out = Path(out)
    write_text_atomic(out, page)
    return out

