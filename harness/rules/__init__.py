"""The diagnosis rules behind ``harness diagnose``.

``facts`` extracts, once per run directory, the numbers the rules look at (a
``Facts`` record); ``single`` holds the rules about one run, layer by layer;
``change`` the rules that compare a run with a baseline. Every rule is a pure
function of ``Facts`` returning zero or more ``Finding`` records, so each can be
tested on constructed data. ``harness/diagnose.py`` runs and ranks them.
"""

from __future__ import annotations

from harness.rules.facts import (
    LAYERS,
    SEVERITIES,
    Facts,
    Finding,
    ProfileFacts,
    StageFacts,
    TagFacts,
    WorkerFacts,
    extract_facts,
)

__all__ = ["LAYERS", "SEVERITIES", "Facts", "Finding", "ProfileFacts", "StageFacts",
           "TagFacts", "WorkerFacts", "extract_facts"]
