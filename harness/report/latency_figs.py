"""Plotly figures of a run's latency: over time, percentile spectrum, stage breakdown, errors.

Each function reads a ``RunDir`` and returns a ``plotly.graph_objects.Figure`` or
None when the run holds nothing to draw; the page module places them. Times on the
x axis are seconds since the load started, latencies are milliseconds.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from hdrh.histogram import HdrHistogram

from harness import stats
from harness.rundir import RunDir
from harness.rundir.records import Summary
from harness.units import fmt_ms

PLOT_PERCENTILES: tuple[float, ...] = (50, 90, 99, 99.9)
_LAYOUT: dict[str, Any] = {"template": "plotly_white", "height": 360,
                           "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                           "legend": {"orientation": "h", "y": -0.2}}


def time_origin(run: RunDir) -> float:
    """Epoch seconds of x = 0: the start of the load (first interval when unknown)."""
    timeline = run.meta.get("timeline") or {}
    if isinstance(timeline.get("load_start"), (int, float)):
        return float(timeline["load_start"])
    ts = [iv["t"] for iv in run.intervals()]
    return min(ts) if ts else run.window()[0]


def _mark_warmup(fig: go.Figure, run: RunDir, origin: float) -> None:
    start, _ = run.window()
    if math.isfinite(start) and start > origin:
        fig.add_vrect(x0=0, x1=start - origin, fillcolor="#999", opacity=0.15, line_width=0,
                      annotation_text="warm-up", annotation_position="top left")


def spectrum_points(hist: HdrHistogram) -> list[tuple[float, float, int]]:
    """(x = 1/(1-p), p in %, value µs) from the median to the maximum, HDR style.

    The ladder is twenty points per decade of 1/(1-p) and stops where fewer than
    one sample lies above p; the last point is the maximum, drawn at x = count.
    """
    total = hist.get_total_count()
    if total == 0:
        return []
    ladder, k = [], 0
    while True:
        x = 10 ** (k / 20)
        if x >= total:
            break
        ladder.append(100.0 * (1.0 - 1.0 / x))
        k += 1
    got = stats.percentiles(hist, ladder) if ladder else {}
    points = [(1.0 / (1.0 - p / 100.0), p, int(got[p])) for p in ladder]
    top = stats.describe(hist, ()).max_us
    points.append((float(total), 100.0 * (1.0 - 1.0 / total) if total > 1 else 100.0,
                   int(top or 0)))
    return points


def _spectrum_axis(fig: go.Figure, longest: float) -> None:
    ticks = [1, 2, 10, 100, 1000, 10_000, 100_000, 1_000_000]
    names = ["0 %", "50 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %", "99.9999 %"]
    keep = [i for i, t in enumerate(ticks) if t <= max(longest, 10)]
    fig.update_xaxes(type="log", title="percentile", tickvals=[ticks[i] for i in keep],
                     ticktext=[names[i] for i in keep])
    fig.update_yaxes(title="latency (ms)", rangemode="tozero")


def spectrum_figure(runs: list[tuple[str, RunDir]]) -> go.Figure | None:
    """Percentile spectrum of client latency, corrected and uncorrected, for one or two runs."""
    fig, longest = go.Figure(), 1.0
    for label, run in runs:
        metrics = ["client"]
        if any(s.get("metric") == "client_uncorrected" for s in run.series()) and \
                (run.meta.get("load") or {}).get("model") == "open":
            metrics.append("client_uncorrected")
        for metric in metrics:
            pts = spectrum_points(run.histogram(metric))
            if not pts:
                continue
            longest = max(longest, pts[-1][0])
            name = "corrected (from intended start)" if metric == "client" and \
                len(metrics) > 1 else ("uncorrected (from send)" if metric != "client"
                                       else "client")
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[p[2] / 1000 for p in pts], mode="lines",
                name=f"{label}: {name}" if len(runs) > 1 else name,
                line={"dash": "dot" if metric != "client" else "solid"},
                customdata=[p[1] for p in pts],
                hovertemplate="p%{customdata:.4f}: %{y:.3f} ms<extra></extra>"))
    if not fig.data:
        return None
    fig.update_layout(title="Percentile spectrum of client latency (measured window)", **_LAYOUT)
    _spectrum_axis(fig, longest)
    return fig


def latency_over_time_figure(run: RunDir) -> go.Figure | None:
    """Client latency percentiles per interval, warm-up shaded."""
    origin = time_origin(run)
    points = run.interval_series("client", percentiles=PLOT_PERCENTILES)
    if not points:
        return None
    fig = go.Figure()
    xs = [p.t - origin for p in points]
    for q in PLOT_PERCENTILES:
        fig.add_trace(go.Scatter(x=xs, y=[_ms(p.percentiles_us.get(q)) for p in points],
                                 mode="lines+markers", name=f"p{q:g}"))
    fig.add_trace(go.Scatter(x=xs, y=[_ms(p.max_us) for p in points], mode="lines",
                             name="max", line={"dash": "dot", "color": "#888"}))
    fig.update_layout(title="Client latency over time", xaxis_title="time since load start (s)",
                      yaxis_title="latency (ms)", **_LAYOUT)
    _mark_warmup(fig, run, origin)
    return fig


def stages_over_time_figure(run: RunDir) -> go.Figure | None:
    """p50 per stage and for the residual per interval (p99 traces hidden until clicked)."""
    origin = time_origin(run)
    stages = sorted({s["stage"] for s in run.series()
                     if s.get("metric") == "stage" and s.get("tag") is None})
    series = [(f"stage {st}", "stage", st) for st in stages] + [("residual", "residual", None)]
    fig = go.Figure()
    for label, metric, stage in series:
        points = run.interval_series(metric, stage=stage, percentiles=(50, 99))
        if not points:
            continue
        xs = [p.t - origin for p in points]
        fig.add_trace(go.Scatter(x=xs, y=[_ms(p.percentiles_us.get(50)) for p in points],
                                 mode="lines", name=f"{label} p50", legendgroup=label))
        fig.add_trace(go.Scatter(x=xs, y=[_ms(p.percentiles_us.get(99)) for p in points],
                                 mode="lines", name=f"{label} p99", legendgroup=label,
                                 line={"dash": "dash"}, visible="legendonly"))
    if not fig.data:
        return None
    fig.update_layout(title="Stages and residual over time (p50; click a p99 legend entry)",
                      xaxis_title="time since load start (s)", yaxis_title="latency (ms)",
                      **_LAYOUT)
    _mark_warmup(fig, run, origin)
    return fig


def breakdown_figure(summary: Summary) -> go.Figure | None:
    """Where the mean client time went: a stacked bar of stage shares and the residual."""
    block = summary.stages.get("*")
    if block is None or not (block.stages or block.residual):
        return None
    nested = block.nested
    # (label, share, p99 µs) per bar segment
    parts = [(st.stage or "", st.share, st.p99_us) for st in block.stages
             if not (nested and st.stage == block.service_total)]
    if nested and block.app_unattributed_share is not None:
        parts.append((f"{block.service_total} (no stage)", block.app_unattributed_share, None))
    if block.residual:
        parts.append(("residual (queue, network)", block.residual.share, block.residual.p99_us))
    mean_ms = (block.client_uncorrected_mean_us or 0) / 1000
    fig = go.Figure()
    for name, share, p99_us in parts:
        share = float(share or 0.0)
        fig.add_trace(go.Bar(
            y=["mean client time"], x=[share * mean_ms], name=name, orientation="h",
            text=[f"{name}<br>{100 * share:.1f} %"], textposition="inside",
            hovertemplate=(f"{name}: %{{x:.3f}} ms ({100 * share:.1f} %)"
                           + (f", p99 {fmt_ms(p99_us)} ms" if p99_us else "")
                           + "<extra></extra>")))
    fig.update_layout(barmode="stack", title=f"Stage breakdown of the mean client time "
                      f"({mean_ms:.3f} ms)", xaxis_title="ms", **{**_LAYOUT, "height": 260})
    return fig


def throughput_figure(run: RunDir) -> go.Figure | None:
    """Requests and failures per second per interval (from intervals.jsonl)."""
    intervals = run.intervals()
    if not intervals:
        return None
    origin = time_origin(run)
    xs = [iv["t"] - origin for iv in intervals]
    rate = [iv.get("requests", 0) / iv["dt"] if iv.get("dt") else None for iv in intervals]
    fail = [iv.get("failures", 0) / iv["dt"] if iv.get("dt") else None for iv in intervals]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=rate, mode="lines+markers", name="requests/s"))
    fig.add_trace(go.Bar(x=xs, y=fail, name="failures/s", marker_color="#d62728"))
    if any("scheduled" in iv for iv in intervals):
        fig.add_trace(go.Scatter(
            x=xs, y=[iv.get("scheduled", 0) / iv["dt"] if iv.get("dt") else None
                     for iv in intervals],
            mode="lines", name="scheduled/s", line={"dash": "dot"}))
    fig.update_layout(title="Throughput and failures over time",
                      xaxis_title="time since load start (s)", yaxis_title="per second",
                      **_LAYOUT)
    _mark_warmup(fig, run, origin)
    return fig


def error_rows(run: RunDir) -> list[tuple[str, str, int]]:
    """(request name, error, count) over the measured window, most frequent first."""
    counts: dict[tuple[str, str], int] = {}
    measured = [iv for iv in run.intervals() if run.in_window(iv["t"])]
    sources = [iv.get("errors") or {} for iv in measured] or [run.load().get("errors") or {}]
    for errors in sources:
        for key, n in errors.items():
            name, _, err = str(key).partition("|")
            counts[(name, err or "error")] = counts.get((name, err or "error"), 0) + int(n)
    return sorted(((n, e, c) for (n, e), c in counts.items()), key=lambda r: -r[2])


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0
