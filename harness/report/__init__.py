"""The self-contained HTML report of a run (``harness report RUN [RUN_B]``).

Plots are drawn with plotly; its JavaScript is embedded once, inline, so the file
opens with no network. ``build_report`` is the only entry point others call.
"""

from __future__ import annotations

from harness.report.build import build_report, run_summary
from harness.report.icicle import IcicleData, build_icicle
from harness.report.latency_figs import spectrum_points

__all__ = ["IcicleData", "build_icicle", "build_report", "run_summary", "spectrum_points"]
