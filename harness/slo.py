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

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import yaml
from scipy.stats import beta

from harness import stats
from harness.rundir import RunDir
from harness.summary import summarize

__all__ = ["DEFAULT_CONFIDENCE", "VERDICTS", "Objective", "Slo", "SloError", "SloResult",
           "SloRow", "check", "format_slo_result", "junit_xml", "latency_label", "load_slo",
           "parse_latency", "parse_percentile", "parse_slo", "request_names", "resolve_name",
           "retarget"]

DEFAULT_CONFIDENCE = 0.95
VERDICTS = ("pass", "fail", "inconclusive", "invalid")
METRICS = ("client", "client_uncorrected", "residual")
_OBJECTIVE_KEYS = {"name", "stage", "metric", "input_class", "tag", "latency", "error_rate",
                   "min_throughput", "description"}
_LATENCY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)?\s*$")
_UNIT_US = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0, None: 1000.0}
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class SloError(ValueError):
    """An SLO file that cannot be used; the message names the file, the key and the value."""


def parse_percentile(key: str) -> float:
    """``"p99"`` -> 99.0, ``"p99.9"`` and ``"p999"`` -> 99.9 (summary.json's spelling)."""
    match = re.fullmatch(r"p(\d+)(?:\.(\d+))?", str(key).strip())
    if not match:
        raise ValueError(f"percentile key must look like p50, p99 or p99.9 (got {key!r})")
    whole, frac = match.groups()
    if frac is None and len(whole) > 2 and not whole.startswith("100"):
        whole, frac = whole[:2], whole[2:]  # p999 is 99.9, as percentile_key writes it
    value = float(f"{whole}.{frac}" if frac else whole)
    if not 0.0 < value < 100.0:
        raise ValueError(f"percentile must be in (0, 100) (got {key!r})")
    return value


def parse_latency(value: Any) -> int:
    """Microseconds from ``"50ms"``, ``"1.5s"``, ``"800us"`` or a bare number of ms."""
    if isinstance(value, bool):
        raise ValueError(f"latency must be a duration like 50ms (got {value!r})")
    if isinstance(value, (int, float)):
        us = float(value) * 1000.0
    else:
        match = _LATENCY.match(str(value))
        if not match:
            raise ValueError(f"latency must be a number with unit us, ms or s (got {value!r})")
        us = float(match.group(1)) * _UNIT_US[match.group(2)]
    if not (math.isfinite(us) and us >= 1.0):
        raise ValueError(f"latency must be at least 1 us (got {value!r})")
    return int(round(us))


def _parse_rate(value: Any) -> float:
    if isinstance(value, str) and _PCT.match(value):
        rate = float(_PCT.match(value).group(1)) / 100.0  # type: ignore[union-attr]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        raise ValueError(f"error rate must be a fraction like 0.01 or a percentage like '1%' "
                         f"(got {value!r})")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"error rate must be in [0, 1) (got {value!r})")
    return rate


def latency_label(p: float) -> str:
    return f"p{p:g}"


@dataclass(frozen=True)
class Objective:
    """One objective: which requests, and the bounds they must meet (µs, fraction, req/s)."""

    name: str = "*"
    metric: str = "client"
    stage: str | None = None
    tag: str | None = None
    latency_us: tuple[tuple[float, int], ...] = ()
    max_error_rate: float | None = None
    min_throughput_rps: float | None = None
    description: str | None = None

    def subject(self) -> str:
        """Human label of the requests this objective is about."""
        who = "all requests" if self.name == "*" else self.name
        if self.stage is not None:
            who += f" stage {self.stage}"
        elif self.metric != "client":
            who += f" ({self.metric})"
        if self.tag is not None:
            who += f" [{self.tag}]"
        return who


@dataclass(frozen=True)
class Slo:
    """A parsed SLO file."""

    objectives: tuple[Objective, ...]
    confidence: float = DEFAULT_CONFIDENCE
    source: str | None = None


def _objective(raw: Any, where: str) -> Objective:
    if not isinstance(raw, dict):
        raise SloError(f"{where}: an objective must be a mapping (got {raw!r})")
    unknown = sorted(set(raw) - _OBJECTIVE_KEYS)
    if unknown:
        raise SloError(f"{where}: unknown key {unknown[0]!r} (known: {sorted(_OBJECTIVE_KEYS)})")
    name = raw.get("name", "*")
    if not isinstance(name, str) or not name:
        raise SloError(f"{where}.name: must be a request name or '*' (got {name!r})")
    stage = raw.get("stage")
    if stage is not None and (not isinstance(stage, str) or not stage):
        raise SloError(f"{where}.stage: must be a stage name (got {stage!r})")
    metric = raw.get("metric", "stage" if stage else "client")
    if stage is not None and metric != "stage":
        raise SloError(f"{where}.metric: with a stage the metric is 'stage' (got {metric!r})")
    if stage is None and metric not in METRICS:
        raise SloError(f"{where}.metric: must be one of {list(METRICS)} (got {metric!r})")
    tag = raw.get("tag")
    if "input_class" in raw:
        if tag is not None:
            raise SloError(f"{where}: give input_class or tag, not both (got {raw!r})")
        tag = f"input_class={raw['input_class']}"
    if tag is not None and (not isinstance(tag, str) or "=" not in tag):
        raise SloError(f"{where}.tag: must be 'key=value' (got {tag!r})")
    latency = raw.get("latency") or {}
    if not isinstance(latency, dict):
        raise SloError(f"{where}.latency: must map percentiles to bounds, e.g. {{p99: 50ms}} "
                       f"(got {latency!r})")
    bounds: dict[float, int] = {}
    for key, value in latency.items():
        try:
            bounds[parse_percentile(key)] = parse_latency(value)
        except ValueError as exc:
            raise SloError(f"{where}.latency.{key}: {exc}") from None
    error_rate = None
    if raw.get("error_rate") is not None:
        try:
            error_rate = _parse_rate(raw["error_rate"])
        except ValueError as exc:
            raise SloError(f"{where}.error_rate: {exc}") from None
    throughput = raw.get("min_throughput")
    if throughput is not None:
        if isinstance(throughput, bool) or not isinstance(throughput, (int, float)) \
                or not (math.isfinite(throughput) and throughput > 0):
            raise SloError(f"{where}.min_throughput: must be a number of requests/s > 0 "
                           f"(got {throughput!r})")
        throughput = float(throughput)
    if stage is not None and (error_rate is not None or throughput is not None):
        raise SloError(f"{where}: error_rate and min_throughput apply to requests, not to "
                       f"stage {stage!r}")
    if not bounds and error_rate is None and throughput is None:
        raise SloError(f"{where}: no bound given (need latency, error_rate or min_throughput)")
    description = raw.get("description")
    return Objective(name=name, metric=metric, stage=stage, tag=tag,
                     latency_us=tuple(sorted(bounds.items())), max_error_rate=error_rate,
                     min_throughput_rps=throughput,
                     description=str(description) if description is not None else None)


def parse_slo(doc: Any, source: str = "<slo>") -> Slo:
    """An Slo from an already-parsed YAML/JSON document; SloError names source and key."""
    if not isinstance(doc, dict):
        raise SloError(f"{source}: must be a mapping with 'objectives' (got {type(doc).__name__})")
    unknown = sorted(set(doc) - {"confidence", "objectives", "description"})
    if unknown:
        raise SloError(f"{source}: unknown top-level key {unknown[0]!r} "
                       "(known: confidence, objectives, description)")
    confidence = doc.get("confidence", DEFAULT_CONFIDENCE)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0.5 < float(confidence) < 1.0:
        raise SloError(f"{source}: confidence must be in (0.5, 1), e.g. 0.95 (got {confidence!r})")
    objectives = doc.get("objectives")
    if not isinstance(objectives, list) or not objectives:
        raise SloError(f"{source}: objectives must be a non-empty list (got {objectives!r})")
    parsed = tuple(_objective(o, f"{source}: objectives[{i}]") for i, o in enumerate(objectives))
    return Slo(objectives=parsed, confidence=float(confidence), source=source)


def load_slo(path: Path | str) -> Slo:
    """Read and validate an SLO file (YAML, or JSON which is YAML too)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloError(f"{path}: cannot read the SLO file ({exc.strerror or exc})") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SloError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                       f"({str(exc).splitlines()[0]})") from None
    return parse_slo(doc, str(path))


def retarget(slo: Slo, name: str) -> Slo:
    """The SLO with objectives on all requests (``"*"``) moved to request ``name``.

    Used when one run holds two versions under two request names: each name must meet
    the SLO on its own.
    """
    objectives = tuple(o if o.name != "*" else Objective(**{**asdict(o), "name": name,
                                                              "latency_us": o.latency_us})
                       for o in slo.objectives)
    return Slo(objectives=objectives, confidence=slo.confidence, source=slo.source)


def request_names(run: RunDir) -> list[str]:
    """The request names recorded in a run (untagged client series)."""
    return sorted({s["name"] for s in run.series()
                   if s.get("metric") in ("client", "client_failed") and s.get("name")})


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
        verdict, detail = "pass", f"{c:.0%} upper bound {upper / 1000:.3f} ms <= target"
    elif lower is not None and lower > target_us:
        verdict, detail = "fail", f"{c:.0%} lower bound {lower / 1000:.3f} ms > target"
    elif upper is None:
        need = stats.min_samples_for_percentile(p, c)
        verdict, detail = "inconclusive", (f"{n} samples: a {c:.0%} upper bound of "
                                           f"{latency_label(p)} needs at least {need}")
    else:
        verdict, detail = "inconclusive", (
            f"target inside the {c:.0%} bounds [{(lower or 0) / 1000:.3f}, "
            f"{upper / 1000:.3f}] ms: run longer to decide")
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


def _self_check_errors(run: RunDir) -> list[str]:
    summary = run.read_json("summary.json")
    if summary is None or "self_check" not in summary:
        summary = summarize(run, write=False)
    return [f"{c['check']}: {c['detail']}" for c in summary.get("self_check", [])
            if not c.get("ok") and c.get("severity") == "error"]


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
        return f"{v / 1000:.3f} ms"
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
