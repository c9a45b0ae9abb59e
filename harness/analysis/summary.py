"""The summary of one run (summary.json), its self-check, and the terminal table.

``summarize`` is a pure function of the run directory's files: request rows, tag
rows, the stage breakdown, resources and a self-check that says how far the
numbers can be trusted. ``format_summary`` turns the result into lines; the CLI
prints them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import stats
from harness.analysis.diagnosis.selfcheck import LOADGEN_SATURATED_PCT, self_check
from harness.rundir import SCHEMA_VERSION, RunDir, schema_errors, write_json_atomic
from harness.rundir.files import ResourceSample

PERCENTILES: tuple[float, ...] = (50, 90, 95, 99, 99.9)
CONFIDENCE = 0.95
SERVICE_ROLES = ("service_master", "service_worker", "service_other")
LOADGEN_ROLES = ("loadgen", "loadgen_worker")


def _stats_block(hist: Any) -> dict[str, Any]:
    d = stats.describe(hist, PERCENTILES, CONFIDENCE)
    block: dict[str, Any] = {"count": d.count, "min_us": d.min_us, "max_us": d.max_us,
                             "mean_us": None if d.mean_us is None else round(d.mean_us, 3)}
    for p in PERCENTILES:
        block[stats.percentile_key(p) + "_us"] = d.percentiles_us.get(p)
    block["low_samples"] = [stats.percentile_key(p) for p in d.low_samples]
    return block


def _errors_by_name(rd: RunDir, load: dict[str, Any]) -> dict[str, dict[str, int]]:
    measured = [iv for iv in rd.intervals() if rd.in_window(iv["t"])]
    source = [iv.get("errors") or {} for iv in measured] if measured else [load.get("errors") or {}]
    out: dict[str, dict[str, int]] = {}
    for errors in source:
        for key, n in errors.items():
            name, _, error = str(key).partition("|")
            per = out.setdefault(name, {})
            per[error or "error"] = per.get(error or "error", 0) + int(n)
    return out


def _request_row(rd: RunDir, name: str, tag: str | None, open_model: bool, seconds: float,
                 errors: dict[str, int] | None) -> dict[str, Any]:
    ok = rd.histogram("client", name, tag=tag)
    failed = rd.histogram("client_failed", name, tag=tag).get_total_count()
    count = ok.get_total_count() + failed
    row: dict[str, Any] = {
        "count": count, "rps": round(count / seconds, 3) if seconds > 0 else None,
        "failures": failed, "fail_pct": round(100.0 * failed / count, 4) if count else None,
        "latency": {"client": _stats_block(ok)},
    }
    if open_model:
        row["latency"]["client_uncorrected"] = _stats_block(
            rd.histogram("client_uncorrected", name, tag=tag))
    if errors is not None:
        row["errors"] = errors
    return row


def _breakdown(rd: RunDir, name: str) -> dict[str, Any] | None:
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
    names = sorted({s["stage"] for s in rd.series() if s.get("metric") == "stage"
                    and (name == "*" or s.get("name") == name) and s.get("tag") is None})
    rows, sums = [], {}
    for stage in names:
        hist = rd.histogram("stage", name, stage=stage)
        if hist.get_total_count() == 0:
            continue
        block = _stats_block(hist)
        sums[stage] = block["mean_us"] * block["count"]
        rows.append({"stage": stage, **block, "share": round(sums[stage] / total, 4)})
    residual_hist = rd.histogram("residual", name)
    residual = None
    if residual_hist.get_total_count():
        residual = _stats_block(residual_hist)
        residual["share"] = round(residual["mean_us"] * residual["count"] / total, 4)
    inner = sum(v for k, v in sums.items() if k != "app")
    out: dict[str, Any] = {
        "client_mean_us": round(stats.mean(client), 3) if client.get_total_count() else None,
        "client_uncorrected_mean_us": round(total / sent.get_total_count(), 3),
        "service_total": "app" if "app" in sums else ("sum" if sums else None),
        "stages": rows, "residual": residual,
        # time inside "app" that no named stage accounts for (framework, locks, GC)
        "app_unattributed_share": round((sums["app"] - inner) / total, 4) if "app" in sums
        and inner else None,
    }
    if out["client_mean_us"] is not None:
        out["schedule_delay_us"] = round(out["client_mean_us"] - out["client_uncorrected_mean_us"],
                                         3)
    return out


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 2)


def _resources(rd: RunDir, start: float, end: float) -> dict[str, Any] | None:
    rows = rd.resources()
    if not rows:
        return None
    # A sample at t holds the CPU used over (t - period, t]: keep the samples whose period
    # lies mostly inside the window, so the harness's own start-up (imports, spawning
    # users) before the load and its shutdown after it are not charged to the run.
    stamps = sorted({r.t for r in rows})
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False) if b > a)
    period = gaps[len(gaps) // 2] if gaps else 0.0
    inside = [r for r in rows if start <= r.t - period / 2 <= end]
    if not inside:
        rd.warnings.append("resources.csv has no sample inside the measured window; used all")
        inside = rows
    times = sorted({r.t for r in inside})
    by_t: dict[float, list[ResourceSample]] = {t: [] for t in times}
    for r in inside:
        by_t[r.t].append(r)
    cpus = int((rd.meta.get("environment") or {}).get("cpu_logical") or 1)
    out: dict[str, Any] = {"samples": len(times), "cpu_count": cpus}

    def per_process(roles: tuple[str, ...]) -> list[dict[str, Any]]:
        pids = sorted({(r.pid, r.role) for r in inside if r.role in roles})
        procs = []
        for pid, role in pids:
            cpu = [r.cpu_percent for r in inside if r.pid == pid]
            procs.append({"pid": pid, "role": role, "cpu_mean_pct": round(sum(cpu) / len(cpu), 2),
                          "cpu_p95_pct": _pct(cpu, 95), "cpu_max_pct": round(max(cpu), 2),
                          "saturated_share": round(
                              sum(c > LOADGEN_SATURATED_PCT for c in cpu) / len(cpu), 4)})
        return procs

    service_cpu = [sum(r.cpu_percent for r in by_t[t] if r.role in SERVICE_ROLES) for t in times
                   if any(r.role in SERVICE_ROLES for r in by_t[t])]
    if service_cpu:
        rss = [sum(r.rss_bytes for r in by_t[t] if r.role in SERVICE_ROLES) for t in times
               if any(r.role in SERVICE_ROLES for r in by_t[t])]
        out["service"] = {
            "cpu_mean_pct": round(sum(service_cpu) / len(service_cpu), 2),
            "cpu_p95_pct": _pct(service_cpu, 95), "cpu_max_pct": round(max(service_cpu), 2),
            "workers": [p for p in per_process(("service_worker",))],
            "rss_start_bytes": rss[0], "rss_end_bytes": rss[-1], "rss_max_bytes": max(rss),
            "rss_growth_bytes": rss[-1] - rss[0]}
    loadgen = per_process(LOADGEN_ROLES)
    if loadgen:
        total = [sum(r.cpu_percent for r in by_t[t] if r.role in LOADGEN_ROLES) for t in times]
        out["loadgen"] = {"cpu_mean_pct": round(sum(total) / len(total), 2),
                          "cpu_max_pct": round(max(total), 2), "processes": loadgen}
    system = [r.cpu_percent for r in inside if r.role == "system"]
    if system:
        out["system"] = {"cpu_mean_pct": round(sum(system) / len(system), 2),
                         "cpu_p95_pct": _pct(system, 95), "cpu_max_pct": round(max(system), 2)}
    out["machine_share"] = {
        key: round(out[key]["cpu_mean_pct"] / (100.0 * cpus), 4) if key in out else None
        for key in ("service", "loadgen")}
    return out


def _profile(rd: RunDir) -> dict[str, Any] | None:
    """Samples per stage of each profile view (profile/stages.json), as shares."""
    stages = rd.read_json("profile/stages.json")
    if not stages:
        return None
    views: dict[str, Any] = {}
    for view in ("oncpu", "wall"):
        counts = stages.get(view)
        if not isinstance(counts, dict):
            continue
        total = sum(n for n in counts.values() if isinstance(n, int))
        if total:
            views[view] = {"samples": total, "shares": {
                k: round(n / total, 4) for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
                if isinstance(n, int) and n}}
    return views or None


def summarize(run_dir: Path | RunDir, write: bool = True) -> dict[str, Any]:
    """Compute summary.json for a run directory (and write it unless ``write=False``)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    meta = rd.meta
    load = rd.load()
    model = (meta.get("load") or {}).get("model") or load.get("model")
    open_model = model == "open"
    start, end, seconds = rd.measured_span()
    errors = _errors_by_name(rd, load)
    names = sorted({s["name"] for s in rd.series()
                    if s.get("metric") in ("client", "client_failed") and s.get("tag") is None})
    requests = []
    for name in names:
        requests.append({"name": name, **_request_row(rd, name, None, open_model, seconds,
                                                       errors.get(name, {}))})
    everything: dict[str, int] = {}
    for per in errors.values():
        for err, n in per.items():
            everything[err] = everything.get(err, 0) + n
    requests.append({"name": "*", **_request_row(rd, "*", None, open_model, seconds, everything)})
    tag_values = sorted({s["tag"] for s in rd.series() if s.get("tag")
                         and s.get("metric") in ("client", "client_failed")})
    tags = []
    for tag in tag_values:
        key, _, value = tag.partition("=")
        tags.append({"tag": tag, "key": key, "value": value,
                     **_request_row(rd, "*", tag, open_model, seconds, None)})
    stage_blocks = {name: _breakdown(rd, name) for name in ["*", *names]}
    resources = _resources(rd, start, end) if math.isfinite(start) else None
    measured = load.get("measured") or {}
    load_block = {
        "source": load.get("source"), "target_rps": load.get("target_rps"),
        "nominal_rps": load.get("nominal_rps", load.get("target_rps")),
        "achieved_rps": requests[-1]["rps"], "users": load.get("users"),
        "workers": load.get("workers"),
        **{k: measured.get(k) for k in ("scheduled", "started", "late", "dropped")},
        "stopped_early": load.get("stopped_early"), "stop_reason": load.get("stop_reason")}
    if open_model:
        late = stats.describe(rd.histogram("lateness"), (50, 99))
        load_block.update(lateness_p50_us=late.percentiles_us.get(50),
                          lateness_p99_us=late.percentiles_us.get(99), lateness_max_us=late.max_us)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": meta.get("run_id") or rd.path.name,
        "status": meta.get("status"), "generated_at": round(time.time(), 3), "model": model,
        "window": {"start": start if math.isfinite(start) else None,
                   "end": end if math.isfinite(start) else None, "duration_s": round(seconds, 3),
                   "planned_duration_s": (meta.get("load") or {}).get("duration_s")},
        "percentiles": list(PERCENTILES), "confidence": CONFIDENCE,
        "min_samples": {stats.percentile_key(p): stats.min_samples_for_percentile(p, CONFIDENCE)
                        for p in PERCENTILES},
        "load": load_block, "requests": requests, "tags": tags,
        "stages": {k: v for k, v in stage_blocks.items() if v is not None},
        "resources": resources,
        "profile": _profile(rd),
    }
    summary["self_check"] = self_check(rd, summary, load)
    summary["ok"] = not any(not c["ok"] and c["severity"] == "error"
                            for c in summary["self_check"])
    summary["warnings"] = list(rd.warnings)
    problems = schema_errors(summary, "summary")
    if problems:
        raise ValueError(f"summary does not match summary.schema.json {problems[0]}")
    if write:
        write_json_atomic(rd.path / "summary.json", summary)
    return summary


# -- terminal table ----------------------------------------------------------------------
def _ms(us: float | None, low: bool = False) -> str:
    if us is None:
        return "-"
    return ("~" if low else "") + f"{us / 1000.0:.3f}"


def _latency_cells(block: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [_ms(block.get(f"{k}_us"), k in block.get("low_samples", [])) for k in keys] + \
        [_ms(block.get("max_us"))]


def format_summary(summary: dict[str, Any]) -> list[str]:
    """A compact fixed-width table of a summary; times in ms with µs precision."""
    keys = ("p50", "p90", "p99", "p999")
    lb, w = summary["load"], summary["window"]
    target = ""
    if lb.get("target_rps"):
        nominal = lb.get("nominal_rps") or lb["target_rps"]
        target = f", target {nominal:g} req/s (scheduled {lb['target_rps']:g})"
    lines = [f"run {summary['run_id']}  status {summary.get('status')}  model "
             f"{summary.get('model')}{target}  measured {w['duration_s']:.1f} s", ""]
    head = f"{'request':<28} {'count':>8} {'req/s':>9} {'fail%':>6} " + \
        " ".join(f"{h:>10}" for h in ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"))
    lines.append(head)
    any_low = False
    blocks = [("client", "")]
    if summary.get("model") == "open":
        blocks.append(("client_uncorrected", "uncorrected (from actual send; client above "
                                             "is from the intended start)"))
    for metric, title in blocks:
        if title:
            lines.append(f"  {title}")
        for row in summary["requests"]:
            block = row["latency"][metric]
            if block["count"] and set(block["low_samples"]) & set(keys):
                any_low = True
            fail = f"{row['fail_pct']:.2f}" if row.get("fail_pct") is not None else "-"
            rps = f"{row['rps']:.2f}" if row.get("rps") is not None else "-"
            lines.append(f"{row['name'][:28]:<28} {row['count']:>8} {rps:>9} {fail:>6} "
                         + " ".join(f"{c:>10}" for c in _latency_cells(block, keys)))
    for row in summary.get("tags", []):
        block = row["latency"]["client"]
        if block["count"] and set(block["low_samples"]) & set(keys):
            any_low = True
        lines.append(f"{('  ' + row['tag'])[:28]:<28} {row['count']:>8} {row['rps'] or 0:>9.2f} "
                     f"{row['fail_pct'] or 0:>6.2f} "
                     + " ".join(f"{c:>10}" for c in _latency_cells(block, keys)))
    stages = summary.get("stages", {}).get("*")
    if stages and (stages["stages"] or stages["residual"]):
        lines += ["", "stage breakdown (all requests; mean ms, p99 ms, share of the mean client "
                      f"time {_ms(stages['client_uncorrected_mean_us'])} ms)"]
        nested = stages["service_total"] == "app"  # the other stages are parts of app
        ordered = sorted(stages["stages"], key=lambda st: st["stage"] != "app")
        for st in [*ordered, *([{"stage": "residual", **stages["residual"]}]
                               if stages["residual"] else [])]:
            inner = nested and st["stage"] not in ("app", "residual")
            label = ("  " if inner else "") + st["stage"] + (" (service total)"
                                                            if nested and st["stage"] == "app"
                                                            else "")
            lines.append(f"  {label[:28]:<28} {_ms(st['mean_us']):>10} "
                         f"{_ms(st['p99_us'], 'p99' in st['low_samples']):>10} "
                         f"{100 * st['share']:>6.1f} %")
            if inner and st is ordered[-1] and stages["app_unattributed_share"] is not None:
                lines.append(f"  {'  (app, no stage)':<28} {'':>10} {'':>10} "
                             f"{100 * stages['app_unattributed_share']:>6.1f} %")
    res = summary.get("resources")
    if res:
        parts = []
        if "service" in res:
            sv = res["service"]
            parts.append(f"service cpu {sv['cpu_mean_pct']:.1f} % (p95 {sv['cpu_p95_pct']:.1f}"
                         f" %), rss {sv['rss_start_bytes'] / 2**20:.1f} -> "
                         f"{sv['rss_end_bytes'] / 2**20:.1f} MiB")
        if "loadgen" in res:
            parts.append(f"loadgen cpu {res['loadgen']['cpu_mean_pct']:.1f} % "
                         f"(max {res['loadgen']['cpu_max_pct']:.1f} %)")
        if "system" in res:
            parts.append(f"system {res['system']['cpu_mean_pct']:.1f} % of "
                         f"{res['cpu_count']} cores")
        lines += ["", "resources: " + "; ".join(parts)]
    names = {"oncpu": "on-CPU", "wall": "wall-clock"}
    for view, block in (summary.get("profile") or {}).items():
        shares = " · ".join(f"{k} {100 * v:.1f} %" for k, v in block["shares"].items())
        lines.append(f"profile ({names.get(view, view)} samples, {block['samples']}): {shares}")
    lines += ["", "self-check:"]
    marks = {"error": "✗", "warning": "!", "info": "i"}
    for c in summary.get("self_check", []):
        lines.append(f"  {'✓' if c['ok'] else marks[c['severity']]} {c['check']}: {c['detail']}")
    if any_low:
        lines += ["", f"~ fewer samples than a {100 * summary['confidence']:.0f} % upper bound "
                      "of that percentile needs: treat it as a rough value"]
    return lines
