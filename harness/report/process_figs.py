"""Plotly figures of the machine side of a run: CPU and memory per process, the profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.report.icicle import build_icicle
from harness.report.latency_figs import time_origin
from harness.rundir import RunDir
from harness.rundir.stacks import read_collapsed
from harness.rundir.telemetry import node_intervals, process_intervals, read_node, read_process

ROLE_ORDER = ("service_master", "service_worker", "service_other", "loadgen", "loadgen_worker",
              "profiler")


def resources_figure(run: RunDir) -> go.Figure | None:
    """CPU (% of one core) and RSS (MiB) per process, and the whole machine's CPU."""
    rows = run.resources()
    if not rows:
        return None
    origin = time_origin(run)
    procs = sorted({(r.role, r.pid) for r in rows if r.role != "system"},
                   key=lambda rp: (ROLE_ORDER.index(rp[0]) if rp[0] in ROLE_ORDER else 99,
                                   rp[1]))
    system = [r for r in rows if r.role == "system"]
    cpus = int((run.meta.get("environment") or {}).get("cpu_logical") or 1)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=("CPU per process (% of one core)",
                                        "Resident memory per process (MiB)",
                                        f"Whole machine CPU (% of all {cpus} cores)"))
    for role, pid in procs:
        mine = [r for r in rows if r.pid == pid and r.role == role]
        xs = [r.t - origin for r in mine]
        label = f"{role} {pid}"
        fig.add_trace(go.Scatter(x=xs, y=[r.cpu_percent for r in mine], mode="lines",
                                 name=label, legendgroup=label), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=[r.rss_bytes / 2**20 for r in mine], mode="lines",
                                 name=label, legendgroup=label, showlegend=False), row=2, col=1)
    if system:
        fig.add_trace(go.Scatter(x=[r.t - origin for r in system],
                                 y=[r.cpu_percent for r in system], mode="lines",
                                 name="system", line={"color": "#444"}), row=3, col=1)
    start, _ = run.window()
    if start > origin:
        for row in (1, 2, 3):
            fig.add_vrect(x0=0, x1=start - origin, fillcolor="#999", opacity=0.15,
                          line_width=0, row=row, col=1)
    fig.update_xaxes(title_text="time since load start (s)", row=3, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(template="plotly_white", height=720, title="CPU and memory",
                      margin={"l": 60, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "y": -0.08})
    return fig


def remote_figure(run: RunDir) -> tuple[go.Figure | None, list[str]]:
    """A target on another host: its process's CPU (cores) and RSS from its /metrics
    process_*, its host's busy CPU, iowait and steal from node_exporter; and the lines
    that name each source (from the summary's records)."""
    procs = read_process(run.path, run.warnings)
    nodes = read_node(run.path, run.warnings)
    p_iv, p_left = process_intervals(procs)
    n_iv, _ = node_intervals(nodes)
    if not p_iv and not n_iv and not procs:
        return None, []
    origin = time_origin(run)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Target process CPU (cores; process_cpu_seconds_total)",
                                        "Target process resident memory (MiB; "
                                        "process_resident_memory_bytes)",
                                        "Service host CPU (% of its cores; node_exporter)"))
    fig.add_trace(go.Scatter(x=[iv.t1 - origin for iv in p_iv], y=[iv.cores for iv in p_iv],
                             mode="lines+markers", name="target process CPU"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[r.t - origin for r in procs],
                             y=[r.resident_memory_bytes / 2**20 for r in procs], mode="lines",
                             name="target process RSS"), row=2, col=1)
    for key, label in (("busy_pct", "host busy"), ("iowait_pct", "host iowait"),
                       ("steal_pct", "host steal")):
        fig.add_trace(go.Scatter(x=[iv.t1 - origin for iv in n_iv],
                                 y=[getattr(iv, key) for iv in n_iv], mode="lines",
                                 name=label), row=3, col=1)
    fig.update_xaxes(title_text="time since load start (s)", row=3, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(template="plotly_white", height=640,
                      title="A target on another host: its own telemetry",
                      margin={"l": 60, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "y": -0.1})
    notes = [f"{p_left} interval(s) across a restart of the target's process (its "
             "process_start_time_seconds changed or its CPU counter went back) left out"
             ] if p_left else []
    return fig, notes


@dataclass(frozen=True)
class ProfileView:
    """What the report shows of the profile: a figure, or why there is none."""

    figure: go.Figure | None
    view: str | None
    note: str
    speedscope: str | None  # path relative to the run directory
    stage_shares: dict[str, float]


def profile_view(run: RunDir, min_share: float = 0.005, max_nodes: int = 400) -> ProfileView:
    """An icicle of the on-CPU profile (wall view when on-CPU is absent)."""
    status = run.profile_status()
    if status is None:
        return ProfileView(None, None, "the run has no profile (profiler not run)", None, {})
    if not status.get("ok"):
        reason = status.get("reason") or "no reason recorded"
        return ProfileView(None, None, f"no profile: {reason}", None, {})
    for view in ("oncpu", "wall"):
        path = run.path / "profile" / f"{view}.collapsed"
        if not path.is_file():
            continue
        try:
            stacks = read_collapsed(path)
        except ValueError as exc:
            return ProfileView(None, view, f"profile/{view}.collapsed is unreadable: {exc}",
                               None, {})
        data = build_icicle(stacks, min_share, max_nodes)
        if data.total_samples == 0:
            continue
        speed = f"profile/{view}.speedscope.json"
        fig = go.Figure(go.Icicle(
            ids=data.ids, labels=data.labels, parents=data.parents, values=data.values,
            branchvalues="total", customdata=data.hovers, maxdepth=16,
            hovertemplate="%{customdata}<br>%{value} samples (%{percentRoot:.1%})<extra></extra>",
            tiling={"orientation": "v"}, root={"color": "#ddd"}))
        fig.update_layout(template="plotly_white", height=760,
                          margin={"l": 10, "r": 10, "t": 50, "b": 10},
                          title=f"Profile: {view} ({data.total_samples} samples; click a frame "
                                "to zoom)")
        note = (f"{len(data.ids)} frames shown; {data.folded_nodes} frames under "
                f"{100 * min_share:.1f} % of samples folded into their callers")
        return ProfileView(fig, view, note,
                           speed if (run.path / speed).is_file() else None,
                           _stage_shares(run, view))
    return ProfileView(None, None, "the profile holds no samples", None, {})


def _stage_shares(run: RunDir, view: str) -> dict[str, float]:
    stages: dict[str, Any] = (run.read_json("profile/stages.json") or {}).get(view) or {}
    counts = {k: float(v) for k, v in stages.items() if isinstance(v, (int, float))}
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}
