"""Plotly figures of a capacity sweep: the latency-throughput curve and the achieved rate.

Each rate is one point, drawn from its latest step (the one whose numbers the table shows;
the latest step of a re-tested rate agrees with the rate's majority). x is the achieved
rate (by intended start: never above the rate asked), y the client latency from the
intended start in ms. The SLO's latency bounds are the steps' own (each step carries the
rows the SLO check judged), so the figure shows what the verdicts were decided on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from harness.rundir.records.capacity import CapacityResult, CurvePoint

__all__ = ["CURVE_PERCENTILES", "SloCurve", "achieved_figure", "curve_figure", "slo_curves"]

CURVE_PERCENTILES = (("p50", "p50_us", "#1f77b4"), ("p90", "p90_us", "#2ca02c"),
                     ("p99", "p99_us", "#9467bd"))
VERDICT_COLORS = {"pass": "#2e7d32", "fail": "#c62828", "invalid": "#757575",
                  "inconclusive": "#ef6c00", "tie": "#ef6c00"}
_LAYOUT: dict[str, Any] = {"template": "plotly_white", "height": 520,
                           "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
                           "legend": {"orientation": "h", "y": -0.14}}


@dataclass(frozen=True)
class SloCurve:
    """One latency objective of the SLO: its label (e.g. "all requests p50"), its bound in
    µs, and, when it is not one of the curve's own lines, its measured value per point."""

    label: str
    target_us: float
    same_as: str | None  # "p50", "p90" or "p99" when the objective is that line of the curve
    measured_us: tuple[float | None, ...]


def _points(result: CapacityResult) -> list[CurvePoint]:
    return [p for p in result.curve() if p.latest.achieved_rps is not None]


def slo_curves(points: list[CurvePoint]) -> list[SloCurve]:
    """The latency objectives the steps were judged on, in the order the SLO lists them."""
    labels: dict[str, float] = {}
    for p in points:
        for o in p.latest.objectives:
            if o.kind == "latency":
                labels.setdefault(o.objective, o.target)
    out = []
    for label, target in labels.items():
        same = next((key for key, _, _ in CURVE_PERCENTILES
                     if label == f"all requests {key}"), None)
        measured = tuple(next((o.measured for o in p.latest.objectives if o.objective == label),
                              None) for p in points)
        out.append(SloCurve(label, target, same, measured))
    return out


def _word(point: CurvePoint) -> str:
    return point.verdict.split()[0]


def _hover(point: CurvePoint) -> str:
    s = point.latest
    return (f"{point.rate_rps:g} req/s asked, {s.achieved_rps or 0:.2f} achieved<br>"
            f"verdict {point.verdict} (steps {point.steps})<br>"
            + "<br>".join(f"{name} {getattr(s, key) / 1000:.1f} ms"
                          for name, key, _ in CURVE_PERCENTILES if getattr(s, key) is not None))


def _verdict_marks(fig: go.Figure, points: list[CurvePoint], ys: list[float | None]) -> None:
    """A ring per rate on the SLO's own line, coloured by the rate's verdict."""
    for word, color in VERDICT_COLORS.items():
        chosen = [(p, y) for p, y in zip(points, ys, strict=True) if _word(p) == word]
        if not chosen or all(y is None for _, y in chosen):
            continue
        fig.add_trace(go.Scatter(
            x=[p.latest.achieved_rps for p, _ in chosen], y=[y for _, y in chosen],
            mode="markers", name=f"verdict: {word}", hovertext=[_hover(p) for p, _ in chosen],
            hoverinfo="text", marker={"size": 15, "color": "rgba(0,0,0,0)",
                                      "line": {"width": 3, "color": color}}))


def _ms_line(points: list[CurvePoint], key: str) -> list[float | None]:
    return [None if getattr(p.latest, key) is None else getattr(p.latest, key) / 1000
            for p in points]


def _judged_line(points: list[CurvePoint], slos: list[SloCurve]) -> list[float | None]:
    """Where each rate's verdict ring goes: on the SLO's first latency objective, else p99."""
    first = slos[0] if slos else None
    if first is None:
        return _ms_line(points, "p99_us")
    if first.same_as is not None:
        return _ms_line(points, f"{first.same_as}_us")
    return [None if v is None else v / 1000 for v in first.measured_us]


def _annotate(fig: go.Figure, points: list[CurvePoint], ys: list[float | None],
              rate: float | None, text: str, ay: int) -> None:
    at = next((i for i, p in enumerate(points) if p.rate_rps == rate), None)
    if at is None or ys[at] is None:
        return
    fig.add_annotation(x=points[at].latest.achieved_rps, y=ys[at], text=text, showarrow=True,
                       arrowhead=2, ax=-60, ay=ay, bgcolor="rgba(255,255,255,0.85)",
                       bordercolor="#444")


def _slo_lines(fig: go.Figure, xs: list[float | None], slos: list[SloCurve]) -> None:
    """Each latency objective's bound; its measured values when not a line of the curve."""
    for curve in slos:
        color = next((c for n, _, c in CURVE_PERCENTILES if n == curve.same_as), "#d62728")
        if curve.same_as is None:
            fig.add_trace(go.Scatter(
                x=xs, y=[None if v is None else v / 1000 for v in curve.measured_us],
                mode="lines+markers", name=curve.label, line={"color": color, "dash": "dot"}))
        fig.add_hline(y=curve.target_us / 1000, line={"color": color, "dash": "dash"},
                      annotation_text=f"SLO {curve.label} <= {curve.target_us / 1000:g} ms",
                      annotation_position="top left")


_SCALES = [{"type": "buttons", "direction": "right", "x": 1, "y": 1.1, "xanchor": "right",
            "buttons": [{"label": "linear", "method": "relayout",
                         "args": [{"yaxis.type": "linear"}]},
                        {"label": "log", "method": "relayout",
                         "args": [{"yaxis.type": "log"}]}]}]


def curve_figure(result: CapacityResult) -> go.Figure | None:
    """p50, p90 and p99 against the achieved rate (joined up to the lowest rate that did not
    pass, points beyond it); the SLO's bounds, each rate's verdict, the capacity and the
    knee."""
    points = _points(result)
    if not points:
        return None
    xs = [p.latest.achieved_rps for p in points]
    fig = go.Figure()
    # A line up to the lowest rate that did not pass; beyond it the achieved rate is the
    # service's (it no longer follows the rate asked), so those points are not joined.
    limit = result.limit_rps if result.limit_rps is not None else math.inf
    for name, key, color in CURVE_PERCENTILES:
        ys = _ms_line(points, key)
        for beyond in (False, True):
            pick = [i for i, p in enumerate(points) if (p.rate_rps > limit) == beyond]
            if pick:
                fig.add_trace(go.Scatter(
                    x=[xs[i] for i in pick], y=[ys[i] for i in pick],
                    mode="markers" if beyond else "lines+markers", name=name, legendgroup=name,
                    showlegend=not beyond or len(pick) == len(points),
                    line={"color": color}, marker={"color": color},
                    hovertext=[_hover(points[i]) for i in pick], hoverinfo="text"))
    slos = slo_curves(points)
    _slo_lines(fig, xs, slos)
    judged = _judged_line(points, slos)
    _verdict_marks(fig, points, judged)
    _annotate(fig, points, judged, result.capacity_rps,
              f"capacity {result.capacity_rps or 0:g} req/s", -50)
    _annotate(fig, points, _ms_line(points, "p99_us"), result.knee_rps,
              f"knee (p99) {result.knee_rps or 0:g} req/s", -90)
    fig.update_layout(title="Latency against achieved rate (one point per rate: its latest "
                      "step)", xaxis_title="achieved rate (req/s, by intended start)",
                      yaxis_title="client latency from intended start (ms)", **_LAYOUT,
                      updatemenus=_SCALES)
    fig.update_yaxes(rangemode="tozero")
    return fig


def achieved_figure(result: CapacityResult) -> go.Figure | None:
    """The achieved rate against the rate asked, with the line where they are equal and what
    each step's window scheduled (Poisson arrivals vary around the rate): where the points
    fall below their schedule, the service (or the load generator) stopped keeping up."""
    points = _points(result)
    if not points:
        return None
    fig = go.Figure()
    top = max(p.rate_rps for p in points)
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="achieved = asked",
                             line={"color": "#999", "dash": "dot"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=[p.rate_rps for p in points], y=[p.latest.target_rps for p in points],
        mode="markers", name="scheduled (what the window held)",
        marker={"size": 14, "symbol": "line-ew", "line": {"width": 2, "color": "#555"}},
        hovertemplate="%{x:g} req/s asked: the window held %{y:.2f}/s<extra></extra>"))
    for word, color in VERDICT_COLORS.items():
        chosen = [p for p in points if _word(p) == word]
        if chosen:
            fig.add_trace(go.Scatter(
                x=[p.rate_rps for p in chosen], y=[p.latest.achieved_rps for p in chosen],
                mode="markers", name=f"verdict: {word}", marker={"size": 10, "color": color},
                hovertext=[_hover(p) for p in chosen], hoverinfo="text"))
    fig.update_layout(title="Achieved rate against the rate asked",
                      xaxis_title="rate asked (req/s)", yaxis_title="achieved (req/s)",
                      **{**_LAYOUT, "height": 380})
    return fig
