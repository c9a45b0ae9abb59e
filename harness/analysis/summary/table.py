"""The terminal table of a summary: ``format_summary(summary) -> list[str]`` (the CLI prints)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.rundir.records import Breakdown, LatencyBlock, Resources, StageRow, Summary
from harness.units import fmt_ms

__all__ = ["format_summary"]

_KEYS = ("p50", "p90", "p99", "p999")
_MARKS = {"error": "✗", "warning": "!", "info": "i"}
_VIEWS = {"oncpu": "on-CPU", "wall": "wall-clock"}


def _cell(us: float | None, low: bool = False) -> str:
    """A time in ms; ``~`` marks a percentile with fewer samples than its bound needs."""
    return fmt_ms(us) if us is None else ("~" if low else "") + fmt_ms(us)


def _cells(block: LatencyBlock) -> str:
    cells = [_cell(block.percentile_us(k), block.is_low(k)) for k in _KEYS] + [_cell(block.max_us)]
    return " ".join(f"{c:>10}" for c in cells)


def _is_low(block: LatencyBlock) -> bool:
    return bool(block.count and set(block.low_samples) & set(_KEYS))


def _header(s: Summary) -> list[str]:
    lb = s.load
    target = ""
    if lb.target_rps:
        nominal = lb.nominal_rps or lb.target_rps
        target = f", target {nominal:g} req/s (scheduled {lb.target_rps:g})"
    warmup = s.window.warmup_s
    after = f" after a {warmup:g} s warm-up" if warmup else (
        " (no warm-up: start-up is in the numbers)" if warmup == 0 else "")
    return [f"run {s.run_id}  status {s.status}  model {s.model}{target}  measured "
            f"{s.window.duration_s:.1f} s{after}", "",
            f"{'request':<28} {'count':>8} {'req/s':>9} {'fail%':>6} "
            + " ".join(f"{h:>10}" for h in ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                                             "max ms"))]


def _request_lines(s: Summary) -> tuple[list[str], bool]:
    lines, any_low = [], False
    blocks = [("client", "")]
    if s.model == "open":
        blocks.append(("client_uncorrected", "uncorrected (from actual send; client above "
                                             "is from the intended start)"))
    for metric, title in blocks:
        if title:
            lines.append(f"  {title}")
        for row in s.requests:
            block = row.latency.get(metric)
            if block is None:
                continue
            any_low |= _is_low(block)
            fail = f"{row.fail_pct:.2f}" if row.fail_pct is not None else "-"
            rps = f"{row.rps:.2f}" if row.rps is not None else "-"
            lines.append(f"{row.name[:28]:<28} {row.count:>8} {rps:>9} {fail:>6} "
                         + _cells(block))
    for tag in s.tags:
        any_low |= _is_low(tag.latency.client)
        lines.append(f"{('  ' + tag.tag)[:28]:<28} {tag.count:>8} {tag.rps or 0:>9.2f} "
                     f"{tag.fail_pct or 0:>6.2f} " + _cells(tag.latency.client))
    return lines, any_low


def _stage_lines(b: Breakdown | None) -> list[str]:
    if b is None or not (b.stages or b.residual):
        return []
    lines = ["", "stage breakdown (all requests; mean ms, p99 ms, share of the mean client "
                 f"time {_cell(b.client_uncorrected_mean_us)} ms)"]
    nested, top = b.nested, b.service_total  # the other stages are parts of the total
    ordered = sorted(b.stages, key=lambda st: st.stage != top)
    entries: list[tuple[str, StageRow]] = [(st.stage or "", st) for st in ordered]
    if b.residual is not None:
        entries.append(("residual", b.residual))
    for name, st in entries:
        inner = nested and name not in (top, "residual")
        label = ("  " if inner else "") + name + (" (service total)"
                                                  if nested and name == top else "")
        lines.append(f"  {label[:28]:<28} {_cell(st.mean_us):>10} "
                     f"{_cell(st.p99_us, st.is_low('p99')):>10} {100 * st.share:>6.1f} %")
        if inner and st is ordered[-1] and b.app_unattributed_share is not None:
            lines.append(f"  {f'  ({top}, no stage)':<28} {'':>10} {'':>10} "
                         f"{100 * b.app_unattributed_share:>6.1f} %")
    split = b.residual_split
    if split is not None:
        for label, key in (("load generator's own", "loadgen"),
                           ("queueing, network, server", "rest")):
            lines.append(f"    {label[:26]:<26} {_cell(split[f'{key}_us']):>10} {'':>10} "
                         f"{100 * split[f'{key}_share']:>6.1f} %")
        closed = split.get("closed_share")
        lines.append("    (the load generator's own time: calibrated against a local echo at "
                     "the run's start" + (")" if closed is None else ";"))
        if closed is not None:
            lines.append(f"     {100 * closed:.0f} % of responses closed their connection: those "
                         "requests charged a new connection's cost, the others a kept-alive one's)")
    if nested and b.service_total_how:
        lines.append(f"  service total {top!r}: {b.service_total_how}")
    return lines


def _resource_lines(res: Resources | None) -> list[str]:
    if res is None:
        return []
    parts = []
    if res.service is not None:
        sv = res.service
        parts.append(f"service cpu {sv.cpu_mean_pct:.1f} % (p95 {sv.cpu_p95_pct:.1f}"
                     f" %), rss {sv.rss_start_bytes / 2**20:.1f} -> "
                     f"{sv.rss_end_bytes / 2**20:.1f} MiB")
    if res.loadgen is not None:
        parts.append(f"loadgen cpu {res.loadgen.cpu_mean_pct:.1f} % "
                     f"(max {res.loadgen.cpu_max_pct:.1f} %)")
    if res.system is not None:
        parts.append(f"system {res.system.cpu_mean_pct:.1f} % of {res.cpu_count} cores")
    lines = ["", "resources: " + "; ".join(parts)] if parts else [""]
    probe = res.cpu_probe
    if probe:
        lines.append(f"machine speed: a fixed unit of work took {probe['mean_us']:.0f} µs of "
                     f"CPU (mean; p10 {probe['p10_us']:.0f}, p90 {probe['p90_us']:.0f} µs, "
                     f"{probe['samples']:.0f} probes): compare runs by it (harness compare)")
    return lines + remote_lines(res)


def remote_lines(res: Resources) -> list[str]:
    """The target on another host: its process (process_*) and its host (node_exporter),
    each line naming its source."""
    lines = []
    tp = res.target_process
    if tp is not None:
        cpu = (f"cpu {tp.cpu_mean_pct:.1f} % of a core (p95 {tp.cpu_p95_pct:.1f} %)"
               if tp.cpu_mean_pct is not None and tp.cpu_p95_pct is not None
               else "cpu unknown (no interval between two scrapes of one process)")
        primary = "" if res.service is None else " [psutil above is primary]"
        lines.append(f"target process: {cpu}, rss {tp.rss_start_bytes / 2**20:.1f} -> "
                     f"{tp.rss_end_bytes / 2**20:.1f} MiB"
                     + (f", fds {tp.open_fds_max}" if tp.open_fds_max is not None else "")
                     + f"{primary}")
        lines.append(f"  from {tp.source}: {tp.what}"
                     + (f"; {tp.left_out} interval(s) across a restart left out"
                        if tp.left_out else ""))
    h = res.host
    if h is not None:
        mem = (f", memory {h.mem_used_mean_bytes / 2**30:.2f} of "
               f"{h.mem_total_bytes / 2**30:.2f} GiB used"
               if h.mem_used_mean_bytes is not None and h.mem_total_bytes else "")
        lines.append(f"service host: cpu {h.cpu_mean_pct:.1f} % of {h.cpus} cores "
                     f"({h.busy_cores_mean:.2f} busy cores, p95 {h.cpu_p95_pct:.1f} %), "
                     f"iowait {h.iowait_mean_pct or 0.0:.1f} %, steal "
                     f"{h.steal_mean_pct or 0.0:.1f} %{mem}"
                     + (f", load1 {h.load1_mean:.2f}" if h.load1_mean is not None else ""))
        lines.append(f"  from {h.source}")
    return lines


def format_summary(summary: Summary | Mapping[str, Any]) -> list[str]:
    """A compact fixed-width table of a summary (a record, or summary.json's dict);
    times in ms with µs precision."""
    s = summary if isinstance(summary, Summary) else Summary.from_dict(summary)
    lines = _header(s)
    rows, any_low = _request_lines(s)
    lines += rows + _stage_lines(s.stages.get("*")) + _resource_lines(s.resources)
    for view, block in (s.profile or {}).items():
        shares = " · ".join(f"{k} {100 * v:.1f} %" for k, v in block.shares.items())
        how = f"; stage map {block.stage_map}" + (f" ({block.chosen})" if block.chosen else "") \
            if block.stage_map else ""
        lines.append(f"profile ({_VIEWS.get(view, view)} samples, {block.samples}{how}): "
                     f"{shares}")
    lines += ["", "self-check:"]
    for c in s.self_check:
        lines.append(f"  {'✓' if c.ok else _MARKS[c.severity]} {c.check}: {c.detail}")
    if any_low:
        lines += ["", f"~ fewer samples than a {100 * s.confidence:.0f} % upper bound "
                      "of that percentile needs: treat it as a rough value"]
    return lines
