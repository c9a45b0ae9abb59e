"""The self-check of a run: the rules that say when the harness's own numbers cannot be trusted.

``core`` holds the context the rules read (``CheckContext``), ``self_check()`` and the rules
about the run and its load; ``sources`` those about where its numbers came from
(Server-Timing, traces, the profiler, the /metrics scrapes); ``workers`` those of a
distributed run (workers lost, workers' clocks). Rules: docs/run-directory.md.
"""

from __future__ import annotations

from harness.analysis.rules import book
from harness.analysis.selfcheck import core, sources, workers
from harness.analysis.selfcheck.core import CheckContext, self_check

__all__ = ["CheckContext", "self_check"]

book("self_check").order_modules(core, sources, workers)
