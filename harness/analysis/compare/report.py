"""The judged comparison for people: the table, the method, one verdict line per request name.

The verdict lines have a fixed form a CI job can read (``verdict "NAME": VERDICT ...``),
and the last line is the overall verdict with its exit code.
"""

from __future__ import annotations

from harness.analysis.compare.judged import Judged, JudgedRow
from harness.units import fmt_ms

__all__ = ["format_judged", "method_lines", "verdict_lines"]

_UNKNOWN_NOISE = (
    "One run per side and no noise calibration: the run-to-run noise is unknown. The "
    "samples' intervals (marked s) say whether these two runs differ, not whether A and B "
    "do; a difference beyond the margin is 'inconclusive', never 'slower'. Measure this "
    "host's noise with `harness calibrate` (then --noise FILE), or make K runs per side "
    "with `harness ab`.")


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{(ratio - 1.0) * 100.0:+.1f} %"


def _interval(r: JudgedRow) -> str:
    if r.low is not None and r.high is not None:
        return f"{(r.low - 1) * 100:+.1f} .. {(r.high - 1) * 100:+.1f} %"
    a = r.a_us
    if r.sample_low_us is not None and r.sample_high_us is not None and a:
        return (f"{r.sample_low_us / a * 100:+.1f} .. "
                f"{r.sample_high_us / a * 100:+.1f} % s")
    return "-"


def method_lines(j: Judged) -> list[str]:
    ka, kb = len(j.a_runs), len(j.b_runs)
    tested = {r.method for r in j.rows if r.p_value is not None}
    # "moderated-paired-log": the same test, each row's spread moderated by its percentile's
    methods = {m.removeprefix("moderated-") for m in tested}
    if j.mode == "names":
        how = ("two request names of one run, requests interleaved: distribution-free "
               "intervals of the samples")
    elif "paired-log" in methods:
        how = (f"runs as the unit: {ka} rounds of A and B made back to back, paired: t on "
               "the rounds' log differences")
    elif "welch-log" in methods:
        how = f"runs as the unit ({ka} and {kb}): Welch's t on the runs' log values"
    elif "pooled-log" in methods:
        how = f"runs as the unit ({ka} and {kb}): t on the runs' log values"
    elif methods:
        how = "one run per side: t on the log values"
    else:
        how = "one run per side"
    if any(m.startswith("moderated-") for m in tested):
        how += " (moderated: each percentile's rows share their spread)"
    if j.noise and j.mode == "runs":
        how += f", with {j.noise}"
    control = next((r.control for r in j.rows if r.control), None)
    if control:
        how += (f"; rows marked ÷ divided by the same row of the control {control!r} "
                "in the run (the change beyond the machine's)")
    lines = [f"B/A, {how}; {j.confidence:.0%} intervals; Holm over {j.family} "
             f"comparisons (p adj); min effect {j.min_effect * 100:g} %"]
    if j.mode == "runs" and ka == kb == 1 and j.noise is None:
        lines.append(_UNKNOWN_NOISE)
    return lines


def _row_line(r: JudgedRow, width: int) -> str:
    p = "-" if r.p_adjusted is None else f"{r.p_adjusted:.3f}" if r.p_adjusted >= 0.001 \
        else f"{r.p_adjusted:.0e}"
    name = f"{r.series.name[:width]:<{width}} " if width else ""
    pct = f"p{r.percentile:g}" + ("÷" if r.control else "")  # ÷: divided by the control
    return (f"{name}{r.series.label[:12]:<12} "
            f"{pct:>6} {fmt_ms(r.a_us):>9} {fmt_ms(r.b_us):>9} "
            f"{_pct(r.ratio):>9} {_interval(r):>22} {p:>7}  {r.verdict}")


def verdict_lines(j: Judged) -> list[str]:
    """One ``verdict "NAME": ...`` line per request name, then ``overall: ...``."""
    lines = []
    for n in j.names:
        detail = "; ".join(f"{r.series.label} p{r.percentile:g} {_pct(r.ratio)}"
                           + (f" ({_interval(r)})" if _interval(r) != "-" else "")
                           for r in n.decisive[:3])
        if n.verdict == "no significant difference" and n.decisive:
            detail = f"{len(n.decisive)} of {n.rows} rows within run-to-run noise"
        lines.append(f'verdict "{n.name}": {n.verdict}' + (f": {detail}" if detail else ""))
    code = j.exit_code()
    meaning = {0: "no regression", 1: f"a regression beyond {j.min_effect * 100:g} %",
               2: "not comparable" if not j.comparable else "inconclusive"}[code]
    lines.append(f"overall: {j.verdict if j.comparable else 'not comparable'} "
                 f"(exit {code}: {meaning})")
    return lines


def format_judged(j: Judged) -> list[str]:
    """The comparison as lines: sides, method, problems, table, notes, SLO, verdicts."""
    la, lb = j.labels
    lines = [f"A: {la}  ({len(j.a_runs)} run{'s' * (len(j.a_runs) != 1)}: "
             f"{', '.join(j.a_runs)})",
             f"B: {lb}  ({len(j.b_runs)} run{'s' * (len(j.b_runs) != 1)}: "
             f"{', '.join(j.b_runs)})"]
    lines += method_lines(j) + [""]
    if j.problems:
        lines += ["!! NOT COMPARABLE:"] + [f"!!   {p}" for p in j.problems] + [""]
    names = {r.series.name for r in j.rows}
    width = min(30, max([len(n) for n in names] + [7])) if len(names) > 1 else 0
    head = f"{'request':<{width}} " if width else ""
    lines.append(f"{head}{'series':<12} {'pct':>6} {'A ms':>9} {'B ms':>9} "
                 f"{'B/A':>9} {'interval':>22} {'p adj':>7}  verdict")
    lines += [_row_line(r, width) for r in j.rows]
    if j.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in j.notes]
    for side, runs in j.slo.items():
        passed = sum(v == "pass" for _, v in runs)
        lines.append(f"SLO side {side}: {passed}/{len(runs)} pass"
                     + "".join(f"; {run} {v}" for run, v in runs if v != "pass"))
    return lines + [""] + verdict_lines(j)
