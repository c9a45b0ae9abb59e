"""A/B sessions (``harness ab``, ``harness calibrate``): K runs per side, in rounds of one A
and one B (A B, B A, A B, ...).

``run_ab(AbOptions)`` makes the runs with ``harness.run.run`` (as ``harness capacity``
makes its steps) and keeps an index, ``ab.json``, in the session directory; the
comparison of the two sides is ``harness.analysis.compare``'s, run by the command.

Modules: ``model`` (options, one run's record, the session and its index file),
``session`` (making the runs, resuming a session).
"""

from __future__ import annotations

from harness.run.ab.model import (
    INDEX_FILE,
    SIDES,
    AbError,
    AbOptions,
    AbRun,
    AbSession,
    read_session,
)
from harness.run.ab.session import run_ab, session_dir

__all__ = ["INDEX_FILE", "SIDES", "AbError", "AbOptions", "AbRun", "AbSession",
           "read_session", "run_ab", "session_dir"]
