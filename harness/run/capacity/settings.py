"""What a sweep ran with, as capacity.json keeps it (``settings``): the scenario, the
target, the search's options and the SLO, written back as an SLO document.

The SLO is kept as a document ``harness.analysis.slo.parse_slo`` reads (the format of
the user's file), so a report made later draws the same bounds the steps were judged by,
without the file.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.slo import Slo
from harness.run.capacity.model import CapacityOptions

__all__ = ["slo_document", "sweep_settings"]


def slo_document(slo: Slo) -> dict[str, Any]:
    """``slo`` as an SLO file's document: ``parse_slo(slo_document(s))`` gives ``s`` back
    (latencies in µs, so no rounding)."""
    objectives = []
    for o in slo.objectives:
        doc: dict[str, Any] = {"name": o.name, "metric": o.metric}
        if o.stage is not None:
            doc["stage"] = o.stage
        if o.tag is not None:
            doc["tag"] = o.tag
        if o.latency_us:
            doc["latency"] = {f"p{p:g}": f"{us}us" for p, us in o.latency_us}
        if o.max_error_rate is not None:
            doc["error_rate"] = o.max_error_rate
        if o.min_throughput_rps is not None:
            doc["min_throughput"] = o.min_throughput_rps
        if o.description is not None:
            doc["description"] = o.description
        objectives.append(doc)
    return {"confidence": slo.confidence, "objectives": objectives}


def sweep_settings(opts: CapacityOptions) -> dict[str, Any]:
    """capacity.json's ``settings`` of a ``CapacityOptions``."""
    t = opts.template
    serve = t.serve_options if t.serve is not None else None
    return {
        "scenario": str(t.scenario), "target": t.target, "serve": t.serve,
        "service_workers": serve.workers if serve is not None else None,
        "faults": serve.faults if serve is not None else None,
        "model_versions": dict(serve.versions) if serve is not None else {},
        "arrival": t.arrival, "start_rps": opts.start_rps, "min_rps": opts.min_rps,
        "max_rps": opts.max_rps, "tolerance": opts.tolerance, "max_steps": opts.max_steps,
        "step_s": opts.step_s, "warmup_s": opts.warmup_s,
        "slo_source": opts.slo.source, "slo": slo_document(opts.slo),
        "command_line": list(t.command_line),
    }
