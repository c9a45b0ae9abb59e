"""Compare two request names of one run: the interleaved comparison (``harness versions``).

When both versions are served side by side and one run sends each input to both, in
random order, whatever the machine does hits both alike, so the samples of one run are
the right unit and the within-run distribution-free interval of the difference
(``harness.stats.compare.quantile_diff``) is the whole uncertainty. Its p-value
(``quantile_diff_p``, the interval inverted) joins Holm's family like any other row.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.analysis.compare.judged import DEFAULT_MIN_EFFECT, Judged, JudgedRow, finish
from harness.analysis.compare.values import SeriesId, hist_values
from harness.analysis.slo import Slo, check, request_names, resolve_name, retarget
from harness.rundir import RunDir
from harness.rundir.records import SeriesEntry
from harness.stats.compare import quantile_diff, quantile_diff_p

__all__ = ["NAMES_PERCENTILES", "compare_names"]

NAMES_PERCENTILES: tuple[float, ...] = (50, 90, 99)


def _stages(run: RunDir, name: str) -> set[str]:
    return {s.stage for s in map(SeriesEntry.from_dict, run.series()) if s.metric == "stage"
            and s.name == name and s.tag is None and s.stage}


def _row(run: RunDir, name_a: str, name_b: str, label: str, metric: str, stage: str | None,
         percentiles: Sequence[float], confidence: float) -> list[JudgedRow]:
    ha = run.histogram(metric, name_a, stage=stage)
    hb = run.histogram(metric, name_b, stage=stage)
    va, vb = hist_values(ha, percentiles), hist_values(hb, percentiles)
    rows = []
    for p in map(float, percentiles):
        series = SeriesId(label, metric, stage)
        a_us, b_us = va[p].us, vb[p].us
        d = quantile_diff(ha, hb, p, confidence) if ha.get_total_count() and \
            hb.get_total_count() else None
        if not a_us or not b_us or d is None or d.ci_low_us is None or d.ci_high_us is None:
            rows.append(JudgedRow(series, p, (a_us,), (b_us,), va[p].n, vb[p].n, None, None,
                                  None, None, None, "within-run"))
            continue
        rows.append(JudgedRow(series, p, (a_us,), (b_us,), va[p].n, vb[p].n, b_us / a_us,
                              (a_us + d.ci_low_us) / a_us, (a_us + d.ci_high_us) / a_us,
                              quantile_diff_p(ha, hb, p), None, "within-run",
                              d.ci_low_us, d.ci_high_us))
    return rows


def compare_names(run: RunDir, name_a: str, name_b: str, *,
                  percentiles: Sequence[float] = NAMES_PERCENTILES, confidence: float = 0.95,
                  min_effect: float = DEFAULT_MIN_EFFECT, slo: Slo | None = None) -> Judged:
    """Request ``name_b`` against ``name_a`` of one run, per series and percentile."""
    ra, rb = resolve_name(run, name_a), resolve_name(run, name_b)
    for given, got in ((name_a, ra), (name_b, rb)):
        if got not in request_names(run):
            raise ValueError(f"request name {given!r} is not in run {run.path.name} "
                             f"(names: {request_names(run)})")
    if ra == rb:
        raise ValueError(f"the two request names must differ (got {ra!r} twice)")
    label = f"{rb} vs {ra}"
    series = [("client", None)] + [("stage", s) for s in sorted(_stages(run, ra)
                                                                & _stages(run, rb))]
    series.append(("residual", None))
    rows = [r for metric, stage in series
            for r in _row(run, ra, rb, label, metric, stage, percentiles, confidence)]
    judged, names = finish(rows, confidence, min_effect)
    run_id = str(run.meta.get("run_id") or run.path.name)
    status = run.meta.get("status")
    notes = [f"run {run.path.name} is {status} (its self-check: harness summary)"] \
        if status not in (None, "complete") else []
    result = Judged("names", (ra, rb), [run_id], [run_id], confidence, min_effect, judged,
                    names, notes=notes,
                    noise="none: both names in one run, requests interleaved")
    if slo is not None:
        result.slo = {"A": [(ra, check(run, retarget(slo, ra)).verdict)],
                      "B": [(rb, check(run, retarget(slo, rb)).verdict)]}
    return result
