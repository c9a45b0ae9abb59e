"""Typed records of the run directory's JSON documents: summary.json (``Summary``),
load.json (``LoadReport``), and the parts of latency/series.json (``SeriesEntry``),
profile/status.json (``ProfileStatus``) and run.json's prometheus status (``ScrapeStatus``)
the analysis reads.

Readers of a run (the analysis, the report) use attributes of these records, not string
keys. ``from_dict`` reads every file of schema version 1.x: keys added after 1.0 may be
missing (they read as None, or as documented on the field); ``to_dict`` writes the
document as ``harness.analysis.summary.summarize`` and the load driver write it, so
``from_dict(to_dict(x)) == x``. A malformed document raises ``ValueError`` naming the file
and the place. Records are frozen; units are in the field names (``_us`` integer µs,
means float µs; ``_pct`` percent of one core; ``_share`` a fraction 0..1; ``_bytes``; ``_s``).
Schemas: harness/rundir/schemas/summary.schema.json and load.schema.json.
"""

from __future__ import annotations

from harness.rundir.records.files import (
    OncpuCheck,
    ProfilerCost,
    ProfileStatus,
    ScrapeStatus,
    SeriesEntry,
    StageMapChoice,
)
from harness.rundir.records.latency import (
    PERCENTILE_KEYS,
    Breakdown,
    Latencies,
    LatencyBlock,
    RequestRow,
    StageRow,
    TagRow,
)
from harness.rundir.records.load import LoadReport, Measured
from harness.rundir.records.remote import HostResources, TargetProcessResources
from harness.rundir.records.summary import (
    CHECK_SEVERITIES,
    CheckEntry,
    Lateness,
    LoadBlock,
    LoadgenResources,
    ProcessCPU,
    ProfileView,
    Resources,
    ServiceResources,
    Summary,
    SystemResources,
    Window,
)

__all__ = ["CHECK_SEVERITIES", "PERCENTILE_KEYS", "Breakdown", "CheckEntry", "Latencies",
           "HostResources", "LatencyBlock", "Lateness", "LoadBlock", "LoadReport",
           "LoadgenResources",
           "Measured", "OncpuCheck", "ProcessCPU", "ProfileStatus", "ProfileView",
           "ProfilerCost", "RequestRow", "Resources", "ScrapeStatus", "SeriesEntry",
           "ServiceResources", "StageMapChoice", "StageRow", "Summary", "SystemResources",
           "TagRow", "TargetProcessResources", "Window"]
