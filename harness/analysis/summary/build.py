"""Building the summary of one run (summary.json) from the run directory's files.

``summarize_record`` is a pure function of the run directory's files: request rows, tag
rows, the stage breakdown, resources and a self-check that says how far the numbers can
be trusted, as a ``harness.rundir.records.Summary``; ``summarize`` writes it and returns
its dict (summary.json, validated by harness/rundir/schemas/summary.schema.json).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from harness import stats
from harness.analysis.selfcheck import self_check
from harness.analysis.summary.resources import profile_shares, resources_block
from harness.rundir import SCHEMA_VERSION, RunDir, schema_errors, write_json_atomic
from harness.rundir.records import (
    Breakdown,
    Latencies,
    LatencyBlock,
    Lateness,
    LoadBlock,
    LoadReport,
    RequestRow,
    SeriesEntry,
    StageRow,
    Summary,
    TagRow,
    Window,
)
from harness.rundir.records.load import achieved_count

__all__ = ["CONFIDENCE", "PERCENTILES", "summarize", "summarize_record"]

PERCENTILES: tuple[float, ...] = (50, 90, 95, 99, 99.9)
CONFIDENCE = 0.95


def _block_fields(hist: HdrHistogram) -> dict[str, Any]:
    d = stats.describe(hist, PERCENTILES, CONFIDENCE)
    return {"count": d.count, "min_us": d.min_us, "max_us": d.max_us,
            "mean_us": None if d.mean_us is None else round(d.mean_us, 3),
            **{stats.percentile_key(p) + "_us": d.percentiles_us.get(p) for p in PERCENTILES},
            "low_samples": tuple(stats.percentile_key(p) for p in d.low_samples)}


def _errors_by_name(rd: RunDir, load: LoadReport) -> dict[str, dict[str, int]]:
    measured = [iv for iv in rd.intervals() if rd.in_window(iv["t"])]
    source = [iv.get("errors") or {} for iv in measured] if measured else [load.errors]
    out: dict[str, dict[str, int]] = {}
    for errors in source:
        for key, n in errors.items():
            name, _, error = str(key).partition("|")
            per = out.setdefault(name, {})
            per[error or "error"] = per.get(error or "error", 0) + int(n)
    return out


def _row_fields(rd: RunDir, name: str, tag: str | None, open_model: bool, seconds: float,
                errors: dict[str, int] | None) -> dict[str, Any]:
    ok = rd.histogram("client", name, tag=tag)
    failed = rd.histogram("client_failed", name, tag=tag).get_total_count()
    count = ok.get_total_count() + failed
    uncorrected = rd.histogram("client_uncorrected", name, tag=tag) if open_model else None
    return {"count": count, "rps": round(count / seconds, 3) if seconds > 0 else None,
            "failures": failed, "fail_pct": round(100.0 * failed / count, 4) if count else None,
            "latency": Latencies(client=_block(ok), client_uncorrected=None if uncorrected
                                 is None else _block(uncorrected)),
            "errors": errors}


def _block(hist: HdrHistogram) -> LatencyBlock:
    return LatencyBlock(**_block_fields(hist))


def _total_stage(rd: RunDir, load: LoadReport, name: str) -> tuple[str | None, str | None]:
    """(stage name, how) of the service's total for request ``name`` ("*": all of them):
    the trace-derived server span when traces gave the stages, else the Server-Timing entry
    the load driver decided on (harness/load/servicetotal.py), else, for runs made before
    that decision was recorded, ``app`` when sent."""
    marked = {s.get("stage") for s in rd.series() if s.get("total") is True
              and s.get("metric") == "stage" and (name == "*" or s.get("name") == name)}
    if len(marked) == 1:
        return marked.pop(), "the server span of each request's trace (--traces)"
    decided = load.extra.get("service_total")
    if isinstance(decided, dict):
        chosen = decided.get("name")
        return (chosen if isinstance(chosen, str) else None), str(decided.get("how") or "")
    return "app", None


def _breakdown(rd: RunDir, name: str, series: list[SeriesEntry], load: LoadReport
               ) -> Breakdown | None:
    """Where the time of successful requests went, as shares of total client time.

    Shares are of summed time (mean x count), so a stage that only some requests
    have (a cache hit skips fetch) weighs by how often it happened. The denominator
    is the uncorrected client time: stages and residual partition exactly that.
    """
    client = rd.histogram("client", name)
    sent = rd.histogram("client_uncorrected", name)
    if sent.get_total_count() == 0:
        sent = client
    if sent.get_total_count() == 0:
        return None
    total = stats.mean(sent) * sent.get_total_count()
    names = sorted({s.stage for s in series if s.metric == "stage" and s.stage is not None
                    and (name == "*" or s.name == name) and s.tag is None})
    rows, sums = [], {}
    for stage in names:
        hist = rd.histogram("stage", name, stage=stage)
        if hist.get_total_count() == 0:
            continue
        block = _block_fields(hist)
        sums[stage] = block["mean_us"] * block["count"]
        rows.append(StageRow(**block, stage=stage, share=round(sums[stage] / total, 4)))
    residual_hist = rd.histogram("residual", name)
    residual = None
    if residual_hist.get_total_count():
        block = _block_fields(residual_hist)
        residual = StageRow(**block, share=round(block["mean_us"] * block["count"] / total, 4))
    split = _residual_split(residual, load)
    top, how = _total_stage(rd, load, name)
    top = top if top in sums else None
    inner = sum(v for k, v in sums.items() if k != top)
    client_mean = round(stats.mean(client), 3) if client.get_total_count() else None
    uncorrected_mean = round(total / sent.get_total_count(), 3)
    return Breakdown(
        client_mean, uncorrected_mean, top or ("sum" if sums else None), tuple(rows), residual,
        # time inside the total that no named stage accounts for (framework, locks, GC)
        round((sums[top] - inner) / total, 4) if top is not None and inner else None,
        None if client_mean is None else round(client_mean - uncorrected_mean, 3),
        how if top is not None else None, split)


def _residual_split(residual: StageRow | None, load: LoadReport) -> dict[str, float] | None:
    """The residual as the load generator's own time (the calibration's mean, at most the
    residual's mean) and the rest: queueing, the network, the server's HTTP layer."""
    overhead = load.extra.get("client_overhead")
    own, closed = _own_time(overhead) if isinstance(overhead, dict) else (None, None)
    if residual is None or own is None or not residual.mean_us:
        return None
    part = min(own, residual.mean_us) / residual.mean_us
    return {"loadgen_us": round(residual.mean_us * part, 3),
            "loadgen_share": round(residual.share * part, 4),
            "rest_us": round(residual.mean_us * (1 - part), 3),
            "rest_share": round(residual.share * (1 - part), 4),
            **({"closed_share": round(closed, 4)} if closed is not None else {})}


def _own_time(overhead: dict[str, Any]) -> tuple[float | None, float | None]:
    """(the client path's mean µs per request, the share of responses that closed their
    connection): each request charged the calibration's cost for the kind of connection it
    had (a kept-alive one, or a new one after the server closed the last)."""
    kept = overhead.get("mean_us")
    if not isinstance(kept, (int, float)):
        return None, None
    fresh = (overhead.get("new_connection") or {}).get("mean_us")
    conns = overhead.get("connections") or {}
    responses, closed = conns.get("responses"), conns.get("closed")
    if not isinstance(fresh, (int, float)) or not responses or not isinstance(closed, int):
        return float(kept), None  # a run from before the two kinds were measured
    share = min(1.0, closed / responses)
    return float(kept) * (1 - share) + float(fresh) * share, share


def _achieved(load: LoadReport, count: int, seconds: float) -> tuple[float | None, str]:
    """(achieved_rps, what it counts) from ``count`` requests answered in the window, by
    load.json's rule (harness.rundir.records.load.achieved_count): in the open model the
    window's intended starts that were made, over the target's own seconds, so that it
    never exceeds target_rps."""
    m = load.measured
    n, by = achieved_count(count, m.started, m.scheduled)
    if m.started is not None and m.scheduled and load.target_rps:
        return round(load.target_rps * n / m.scheduled, 3), by
    return (round(n / seconds, 3) if seconds > 0 else None), by


def _load_block(rd: RunDir, load: LoadReport, achieved: tuple[float | None, str],
                open_model: bool) -> LoadBlock:
    m = load.measured
    lateness = loop = None
    if open_model:
        lateness = _lateness(rd.histogram("lateness"))
        hist = rd.histogram("lateness_loop")
        loop = _lateness(hist, mean=True) if hist.get_total_count() else None  # older: none
    return LoadBlock(source=load.source, target_rps=load.target_rps,
                     nominal_rps=load.nominal_rps, achieved_rps=achieved[0],
                     achieved_by=achieved[1], users=load.users,
                     workers=load.workers, scheduled=m.scheduled, started=m.started,
                     late=m.late, dropped=m.dropped, stopped_early=load.stopped_early,
                     stop_reason=load.stop_reason, lateness=lateness,
                     late_loop=m.late_loop if loop is not None else None, lateness_loop=loop)


def _lateness(hist: HdrHistogram, mean: bool = False) -> Lateness:
    d = stats.describe(hist, (50, 99))
    return Lateness(d.percentiles_us.get(50), d.percentiles_us.get(99), d.max_us,
                    None if d.mean_us is None or not mean else round(d.mean_us, 3))


def _rows(rd: RunDir, load: LoadReport, series: list[SeriesEntry], open_model: bool,
          seconds: float) -> tuple[tuple[RequestRow, ...], tuple[TagRow, ...]]:
    errors = _errors_by_name(rd, load)
    names = sorted({s.name for s in series if s.is_request and s.tag is None
                    and s.name is not None})
    requests = [RequestRow(name=name, **_row_fields(rd, name, None, open_model, seconds,
                                                    errors.get(name, {}))) for name in names]
    everything: dict[str, int] = {}
    for per in errors.values():
        for err, n in per.items():
            everything[err] = everything.get(err, 0) + n
    requests.append(RequestRow(name="*", **_row_fields(rd, "*", None, open_model, seconds,
                                                       everything)))
    tags = []
    for tag in sorted({s.tag for s in series if s.tag and s.is_request}):
        key, _, value = tag.partition("=")
        tags.append(TagRow(tag=tag, key=key, value=value,
                           **_row_fields(rd, "*", tag, open_model, seconds, None)))
    return tuple(requests), tuple(tags)


def _build(rd: RunDir) -> Summary:
    meta = rd.meta
    load = LoadReport.from_dict(rd.load())
    model = (meta.get("load") or {}).get("model") or load.model
    open_model = model == "open"
    start, end, seconds = rd.measured_span()
    series = [SeriesEntry.from_dict(s) for s in rd.series()]
    requests, tags = _rows(rd, load, series, open_model, seconds)
    breakdowns = {name: _breakdown(rd, name, series, load)
                  for name in ["*", *(r.name for r in requests[:-1])]}
    finite = math.isfinite(start)
    summary = Summary(
        schema_version=SCHEMA_VERSION, run_id=str(meta.get("run_id") or rd.path.name),
        status=meta.get("status"), generated_at=round(time.time(), 3), model=model,
        window=Window(start if finite else None, end if finite else None, round(seconds, 3),
                      (meta.get("load") or {}).get("duration_s"),
                      (meta.get("load") or {}).get("warmup_s")),
        percentiles=PERCENTILES, confidence=CONFIDENCE,
        min_samples={stats.percentile_key(p): stats.min_samples_for_percentile(p, CONFIDENCE)
                     for p in PERCENTILES},
        load=_load_block(rd, load, _achieved(load, requests[-1].count, seconds), open_model),
        requests=requests,
        tags=tags, stages={k: v for k, v in breakdowns.items() if v is not None},
        resources=resources_block(rd, start, end) if finite else None,
        profile=profile_shares(rd))
    checks = tuple(self_check(rd, summary, load))
    return replace(summary, self_check=checks, ok=not any(c.is_error for c in checks),
                   warnings=tuple(rd.warnings))


def _checked(summary: Summary) -> dict[str, Any]:
    doc = summary.to_dict()
    problems = schema_errors(doc, "summary")
    if problems:
        raise ValueError(f"summary does not match summary.schema.json {problems[0]}")
    return doc


def summarize_record(run_dir: Path | RunDir) -> Summary:
    """The summary of a run directory as a record (not written)."""
    summary = _build(run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir))
    _checked(summary)
    return summary


def summarize(run_dir: Path | RunDir, write: bool = True) -> dict[str, Any]:
    """Compute summary.json for a run directory (and write it unless ``write=False``)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    doc = _checked(_build(rd))
    if write:
        write_json_atomic(rd.path / "summary.json", doc)
    return doc
