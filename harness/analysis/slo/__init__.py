"""Service-level objectives: the SLO file (``spec``) and checking a run against it
(``check``): per objective a verdict with its distribution-free confidence bound."""

from __future__ import annotations

from harness.analysis.slo.check import (
    DEFAULT_CONFIDENCE,
    VERDICTS,
    Objective,
    Slo,
    SloError,
    SloResult,
    SloRow,
    check,
    format_slo_result,
    junit_xml,
    latency_label,
    load_slo,
    parse_latency,
    parse_percentile,
    parse_slo,
    request_names,
    resolve_name,
    retarget,
)

__all__ = ["DEFAULT_CONFIDENCE", "VERDICTS", "Objective", "Slo", "SloError", "SloResult",
           "SloRow", "check", "format_slo_result", "junit_xml", "latency_label", "load_slo",
           "parse_latency", "parse_percentile", "parse_slo", "request_names", "resolve_name",
           "retarget"]
