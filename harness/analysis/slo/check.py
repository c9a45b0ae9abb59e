"""SLO files and the check of a run against them (``harness check``).

An SLO file (YAML or JSON, reference in docs/slo.md) lists objectives: for a
request name (``"*"`` = all), optionally a stage and an input class, bounds on
latency percentiles, on the error rate and on the throughput.

A latency claim "p99 <= 50 ms" is decided as MLPerf LoadGen's early stopping
does, from order statistics and the binomial distribution, so it needs no
assumption about the latency distribution:

- pass when the one-sided upper confidence bound of p99 is <= 50 ms;
- fail when the one-sided lower confidence bound is > 50 ms;
- inconclusive otherwise (too few samples, or the target lies inside the interval).

The error rate is decided the same way with Clopper-Pearson bounds. Throughput
(requests per second over the measured window) is a measured rate, not a sample
statistic: it passes or fails on its value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from scipy.stats import beta

from harness import stats
from harness.analysis.slo.spec import (
    DEFAULT_CONFIDENCE,
    Objective,
    Slo,
    SloError,
    latency_label,
    load_slo,
    parse_latency,
    parse_percentile,
    parse_slo,
    retarget,
)
from harness.analysis.summary import summarize_record
from harness.rundir import RunDir
from harness.rundir.records import CheckEntry, SeriesEntry, Summary
from harness.units import fmt_ms

__all__ = ["DEFAULT_CONFIDENCE", "VERDICTS", "Objective", "Slo", "SloError", "SloResult",
           "SloRow", "check", "format_slo_result", "junit_xml", "latency_label", "load_slo",
           "parse_latency", "parse_percentile", "parse_slo", "request_names", "resolve_name",
           "retarget"]

VERDICTS = ("pass", "fail", "inconclusive", "invalid")

def request_names(run: RunDir) -> list[str]:
    """The request names recorded in a run (client series)."""
    return sorted({s.name for s in map(SeriesEntry.from_dict, run.series())
                   if s.is_request and s.name})


def resolve_name(run: RunDir, name: str) -> str:
    """The run's request name for ``name``: exact, or the one name ending in `` name``.

    Locust users write ``name="predict fraud"``; the run records ``"POST predict fraud"``
    for some clients, so the method prefix may be left out. Unknown names are returned
    unchanged (the caller reports "no samples").
    """
    names = request_names(run)
    if name == "*" or name in names:
        return name
    matches = [n for n in names if n.endswith(" " + name)]
    return matches[0] if len(matches) == 1 else name


@dataclass(frozen=True)
class SloRow:
    """One decided claim. Units: latency µs, error rate as a fraction, throughput req/s."""

    objective: str
    kind: str
    target: float
    measured: float | None
    lower: float | None
    upper: float | None
    samples: int
    verdict: str
    detail: str

    @property
    def bound(self) -> float | None:
        """The bound that decided the verdict (lower for a fail, upper otherwise)."""
        return self.lower if self.verdict == "fail" and self.kind != "throughput" else self.upper


@dataclass
class SloResult:
    """The check of one run against an SLO; ``verdict`` in pass|fail|inconclusive|invalid."""

    run_id: str
    verdict: str
    rows: list[SloRow]
    confidence: float
    self_check_errors: list[str] = field(default_factory=list)
    self_check_ignored: bool = False
    source: str | None = None

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "verdict": self.verdict, "slo": self.source,
                "confidence": self.confidence, "self_check_errors": list(self.self_check_errors),
                "self_check_ignored": self.self_check_ignored,
                "rows": [{**asdict(r), "bound": r.bound} for r in self.rows]}


def _latency_row(run: RunDir, o: Objective, p: float, target_us: int, c: float) -> SloRow:
    label = f"{o.subject()} {latency_label(p)}"
    hist = run.histogram(o.metric, resolve_name(run, o.name), stage=o.stage, tag=o.tag)
    n = hist.get_total_count()
    if n == 0:
        return SloRow(label, "latency", target_us, None, None, None, 0, "inconclusive",
                      f"no samples of {o.subject()} in this run")
    measured = stats.percentiles(hist, [p])[p]
    upper = stats.quantile_upper_bound(hist, p, c).upper_us
    # A one-sided lower bound at c is the lower end of a two-sided (2c - 1) interval.
    lo_rank, _ = stats.quantile_ci_ranks(n, p, 2.0 * c - 1.0)
    lower = stats.value_at_rank(hist, lo_rank, upper=False) if lo_rank is not None else None
    if upper is not None and upper <= target_us:
        verdict, detail = "pass", f"{c:.0%} upper bound {fmt_ms(upper)} ms <= target"
    elif lower is not None and lower > target_us:
        verdict, detail = "fail", f"{c:.0%} lower bound {fmt_ms(lower)} ms > target"
    elif upper is None:
        need = stats.min_samples_for_percentile(p, c)
        verdict, detail = "inconclusive", (f"{n} samples: a {c:.0%} upper bound of "
                                           f"{latency_label(p)} needs at least {need}")
    else:
        verdict, detail = "inconclusive", (
            f"target inside the {c:.0%} bounds [{fmt_ms(lower or 0)}, {fmt_ms(upper)}] ms: "
            "run longer to decide")
    return SloRow(label, "latency", target_us, measured, lower, upper, n, verdict, detail)


def _error_row(run: RunDir, o: Objective, target: float, c: float) -> SloRow:
    label = f"{o.subject()} error rate"
    name = resolve_name(run, o.name)
    ok = run.histogram("client", name, tag=o.tag).get_total_count()
    failed = run.histogram("client_failed", name, tag=o.tag).get_total_count()
    n = ok + failed
    if n == 0:
        return SloRow(label, "error_rate", target, None, None, None, 0, "inconclusive",
                      f"no requests of {o.subject()} in this run")
    rate = failed / n
    # Clopper-Pearson one-sided bounds: exact for a binomial proportion.
    upper = 1.0 if failed == n else float(beta.ppf(c, failed + 1, n - failed))
    lower = 0.0 if failed == 0 else float(beta.ppf(1.0 - c, failed, n - failed + 1))
    if target == 0.0:  # "no errors at all" is a claim about this run, not a rate
        verdict = "pass" if failed == 0 else "fail"
        detail = f"{failed} failed of {n} (target: none)"
    elif upper <= target:
        verdict, detail = "pass", f"{failed}/{n} failed; {c:.0%} upper bound {upper:.3%}"
    elif lower > target:
        verdict, detail = "fail", f"{failed}/{n} failed; {c:.0%} lower bound {lower:.3%}"
    else:
        verdict, detail = "inconclusive", (f"{failed}/{n} failed; target inside the {c:.0%} "
                                           f"bounds [{lower:.3%}, {upper:.3%}]")
    return SloRow(label, "error_rate", target, rate, lower, upper, n, verdict, detail)


def _throughput_row(run: RunDir, o: Objective, target: float) -> SloRow:
    label = f"{o.subject()} throughput"
    name = resolve_name(run, o.name)
    n = (run.histogram("client", name, tag=o.tag).get_total_count()
         + run.histogram("client_failed", name, tag=o.tag).get_total_count())
    _, _, seconds = run.measured_span()
    if seconds <= 0:
        return SloRow(label, "throughput", target, None, None, None, n, "inconclusive",
                      "the run has no measured window")
    rps = n / seconds
    verdict = "pass" if rps >= target else "fail"
    detail = f"{n} requests in {seconds:.1f} s"
    planned = (run.meta.get("load") or {}).get("rate")
    if verdict == "fail" and o.name == "*" and isinstance(planned, (int, float)) \
            and planned < target:
        detail += f"; the run's target rate was only {planned:g} req/s"
    return SloRow(label, "throughput", target, rps, rps, rps, n, verdict, detail)


def _self_check(run: RunDir) -> tuple[CheckEntry, ...]:
    """The self-check of summary.json when it is valid, else of the summary computed now."""
    saved = run.saved_summary()
    if saved is not None:
        try:
            return Summary.from_dict(saved).self_check
        except ValueError as exc:
            run.warnings.append(f"summary.json: {exc}; its self-check recomputed")
    return summarize_record(run).self_check


def _self_check_errors(run: RunDir) -> list[str]:
    return [f"{c.check}: {c.detail}" for c in _self_check(run) if c.is_error]


def check(run: RunDir, slo: Slo, confidence: float | None = None, *,
          ignore_self_check: bool = False) -> SloResult:
    """Decide every objective of ``slo`` on ``run``; ``confidence`` overrides the file's."""
    c = slo.confidence if confidence is None else confidence
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 < c < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1) (got {c!r})")
    rows: list[SloRow] = []
    for o in slo.objectives:
        rows += [_latency_row(run, o, p, us, c) for p, us in o.latency_us]
        if o.max_error_rate is not None:
            rows.append(_error_row(run, o, o.max_error_rate, c))
        if o.min_throughput_rps is not None:
            rows.append(_throughput_row(run, o, o.min_throughput_rps))
    errors = _self_check_errors(run)
    verdicts = {r.verdict for r in rows}
    if errors and not ignore_self_check:
        verdict = "invalid"
    elif "fail" in verdicts:
        verdict = "fail"
    elif "inconclusive" in verdicts:
        verdict = "inconclusive"
    else:
        verdict = "pass"
    return SloResult(run_id=str(run.meta.get("run_id") or run.path.name), verdict=verdict,
                     rows=rows, confidence=float(c), self_check_errors=errors,
                     self_check_ignored=bool(errors) and ignore_self_check, source=slo.source)


def _value(kind: str, v: float | None) -> str:
    if v is None:
        return "-"
    if kind == "latency":
        return fmt_ms(v, unit=True)
    if kind == "error_rate":
        return f"{v:.3%}"
    return f"{v:.2f}/s"


def format_slo_result(result: SloResult) -> list[str]:
    """A fixed-width table of the rows and the overall verdict."""
    lines = [f"run {result.run_id}  SLO {result.source or '-'}  confidence "
             f"{result.confidence:.0%}", ""]
    lines.append(f"{'objective':<44} {'target':>12} {'measured':>12} {'bound':>12} "
                 f"{'samples':>8}  verdict")
    for r in result.rows:
        op = ">=" if r.kind == "throughput" else "<="
        lines.append(f"{r.objective[:44]:<44} {op + ' ' + _value(r.kind, r.target):>12} "
                     f"{_value(r.kind, r.measured):>12} {_value(r.kind, r.bound):>12} "
                     f"{r.samples:>8}  {r.verdict.upper()}")
        lines.append(f"{'':<6}{r.detail}")
    if result.self_check_errors:
        lines += ["", "self-check errors (the run's numbers cannot be trusted)"
                  + (" - ignored (--ignore-self-check):" if result.self_check_ignored else ":")]
        lines += [f"  ✗ {e}" for e in result.self_check_errors]
    lines += ["", f"verdict: {result.verdict.upper()}"]
    return lines


def junit_xml(result: SloResult) -> str:
    """JUnit XML for CI systems: one testcase per row; fail -> <failure>, inconclusive ->
    <skipped>; an invalid run adds a failing "self-check" testcase."""
    suite = ET.Element("testsuite", name=f"slo {result.source or ''}".strip(),
                       timestamp="", hostname="")
    del suite.attrib["timestamp"], suite.attrib["hostname"]
    failures = skipped = 0
    for r in result.rows:
        case = ET.SubElement(suite, "testcase", classname=f"slo.{result.run_id}",
                             name=r.objective, time="0")
        text = (f"target {_value(r.kind, r.target)}, measured {_value(r.kind, r.measured)}, "
                f"bound {_value(r.kind, r.bound)}, {r.samples} samples: {r.detail}")
        if r.verdict == "fail":
            failures += 1
            ET.SubElement(case, "failure", message=r.detail, type="slo_violated").text = text
        elif r.verdict == "inconclusive":
            skipped += 1
            ET.SubElement(case, "skipped", message=f"inconclusive: {r.detail}").text = text
        else:
            ET.SubElement(case, "system-out").text = text
    if result.self_check_errors:
        case = ET.SubElement(suite, "testcase", classname=f"slo.{result.run_id}",
                             name="run self-check", time="0")
        text = "\n".join(result.self_check_errors)
        if result.self_check_ignored:
            ET.SubElement(case, "system-out").text = "ignored: " + text
        else:
            failures += 1
            ET.SubElement(case, "failure", message="the run failed its self-check",
                          type="invalid_run").text = text
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
