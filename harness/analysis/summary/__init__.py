"""The summary of one run (summary.json), its self-check, and the terminal table.

``build``: ``summarize(run_dir, write=True) -> dict`` (summary.json) and
``summarize_record(run_dir) -> Summary`` (the same as a ``harness.rundir.records.Summary``);
``resources``: the resources and profile blocks; ``table``: ``format_summary(summary)``
(a record or summary.json's dict) ``-> list[str]``. The self-check rules are in
``harness.analysis.selfcheck``.
"""

from __future__ import annotations

from harness.analysis.summary.build import CONFIDENCE, PERCENTILES, summarize, summarize_record
from harness.analysis.summary.resources import LOADGEN_ROLES, SERVICE_ROLES
from harness.analysis.summary.table import format_summary, remote_lines

__all__ = ["CONFIDENCE", "LOADGEN_ROLES", "PERCENTILES", "SERVICE_ROLES", "format_summary",
           "remote_lines", "summarize", "summarize_record"]
