"""The SLO file: its format, parsing and validation (reference: docs/slo.md).

Kept apart from the decision rules (``check``; ``harness.analysis.slo`` re-exports both)
so that each module has one role: this one turns text into checked ``Slo`` records. The
file's shape is checked against a JSON Schema (``schema.SLO_SCHEMA``); what a schema
cannot say (a percentile in (0, 100), a latency of at least 1 µs) is checked here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.analysis.slo.schema import METRICS, slo_problem

__all__ = ["DEFAULT_CONFIDENCE", "METRICS", "Objective", "Slo", "SloError", "latency_label",
           "load_slo", "parse_latency", "parse_percentile", "parse_slo", "retarget"]

DEFAULT_CONFIDENCE = 0.95
_LATENCY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)?\s*$")
_UNIT_US = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0, None: 1000.0}
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class SloError(ValueError):
    """An SLO file that cannot be used; the message names the file, the key and the value."""


def parse_percentile(key: str) -> float:
    """``"p99"`` -> 99.0, ``"p99.9"`` and ``"p999"`` -> 99.9 (summary.json's spelling).

    The dotless spelling of a fraction is taken only as summary.json writes it (two
    digits, then the fraction without a trailing zero): ``p150`` is refused, not read as
    p15 (it can only mean a 150th percentile)."""
    match = re.fullmatch(r"p(\d+)(?:\.(\d+))?", str(key).strip())
    if not match:
        raise ValueError(f"percentile key must look like p50, p99 or p99.9 (got {key!r})")
    whole, frac = match.groups()
    if frac is None and len(whole) > 2 and not whole.startswith("100"):
        if whole.endswith("0") or whole.startswith("0"):
            raise ValueError(f"percentile must be in (0, 100): write p99.9 or p999 for 99.9 "
                             f"(got {key!r})")
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


def _objective(raw: dict[str, Any], where: str) -> Objective:
    """An Objective from an objective the schema accepted: what a schema cannot say
    (percentiles in (0, 100), latencies of at least 1 µs, a percentage error rate below
    100 %, a finite throughput) is checked here, in the same message format."""
    stage = raw.get("stage")
    tag = raw.get("tag")
    if "input_class" in raw:
        tag = f"input_class={raw['input_class']}"
    bounds: dict[float, int] = {}
    for key, value in (raw.get("latency") or {}).items():
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
    if throughput is not None and not math.isfinite(throughput):
        raise SloError(f"{where}.min_throughput: must be a number of requests/s > 0 "
                       f"(got {throughput!r})")
    description = raw.get("description")
    return Objective(name=raw.get("name", "*"), metric=raw.get("metric", "stage" if stage
                                                                 else "client"),
                     stage=stage, tag=tag, latency_us=tuple(sorted(bounds.items())),
                     max_error_rate=error_rate,
                     min_throughput_rps=None if throughput is None else float(throughput),
                     description=str(description) if description is not None else None)


def parse_slo(doc: Any, source: str = "<slo>") -> Slo:
    """An Slo from an already-parsed YAML/JSON document; SloError names the source, the
    field, the rule and the value. The shape is checked against ``schema.SLO_SCHEMA``."""
    problem = slo_problem(doc)
    if problem is not None:
        raise SloError(f"{source}: {problem}")
    parsed = tuple(_objective(o, f"{source}: objectives[{i}]")
                   for i, o in enumerate(doc["objectives"]))
    return Slo(objectives=parsed, confidence=float(doc.get("confidence", DEFAULT_CONFIDENCE)),
               source=source)


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
