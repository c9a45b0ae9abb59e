"""The rule engine shared by the self-check and the diagnosis, and the thresholds table.

``registry``: ``Finding`` (with ``SEVERITIES`` and ``LAYERS``), ``Rule``, ``RuleBook`` and
the ``rule(book, id, layer)`` decorator that files a rule in one of the named books
(``self_check``, ``single``, ``change``, ``data``). ``thresholds``: every threshold the
rules compare against, each with its value, unit and reason (``THRESHOLDS``).
"""

from __future__ import annotations

from harness.analysis.rules.registry import (
    BOOKS,
    LAYERS,
    SEVERITIES,
    Finding,
    Rule,
    RuleBook,
    book,
    rule,
)
from harness.analysis.rules.thresholds import THRESHOLDS, Threshold

__all__ = ["BOOKS", "LAYERS", "SEVERITIES", "THRESHOLDS", "Finding", "Rule", "RuleBook",
           "Threshold", "book", "rule"]
