"""The self-contained HTML report of a run (``harness report RUN [RUN_B]``), or of a
capacity sweep (``harness report SWEEP_DIR``: ``sweep``, ``sweep_figs``).

Plots are drawn with plotly; its JavaScript is embedded once, inline, so the file
opens with no network. ``build_report`` and ``build_sweep_report`` are the entry
points others call.
"""

from __future__ import annotations

from harness.report.build import build_report, run_summary
from harness.report.icicle import IcicleData, build_icicle
from harness.report.latency_figs import spectrum_points
from harness.report.sweep import build_sweep_report, is_sweep_dir, read_sweep

__all__ = ["IcicleData", "build_icicle", "build_report", "build_sweep_report", "is_sweep_dir",
           "read_sweep", "run_summary", "spectrum_points"]
