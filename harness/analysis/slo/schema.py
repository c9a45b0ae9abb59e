"""The SLO file's JSON Schema, and its violations as messages naming the field, the rule and
the value (``slo.yaml: objectives[0].min_throughput: must be a number of requests/s > 0
(got -3)``).

The schema checks the file's shape: keys, types, the percentile keys, latency spellings,
which combinations are allowed, that each objective has a bound. What a schema cannot
say stays in ``spec``: a percentile in (0, 100), a latency of at least 1 µs, a percentage
error rate below 100 %, a finite throughput. Each schema node carries the message of its
rule (``x-message``, or ``x-messages`` per JSON Schema keyword); when several rules are
broken the first in the file's order is reported, as a reader would fix them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

__all__ = ["METRICS", "OBJECTIVE_KEYS", "SLO_SCHEMA", "slo_problem"]

METRICS = ("client", "client_uncorrected", "residual")
#: objective keys in the order the file's problems are reported
OBJECTIVE_KEYS = ("name", "stage", "metric", "input_class", "tag", "latency", "error_rate",
                  "min_throughput", "description")
_NOT_NULL = {"not": {"type": "null"}}
_PERCENTAGE = r"^\s*\d+(\.\d+)?\s*%\s*$"
_RATE = "error rate must be a fraction like 0.01 or a percentage like '1%'"

_OBJECTIVE: dict[str, Any] = {
    "type": "object",
    "x-messages": {"type": "{where}: an objective must be a mapping (got {value})",
                   "additionalProperties": "{where}: unknown key {key} (known: {known})"},
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1,
                 "x-message": "{where}: must be a request name or '*' (got {value})"},
        "stage": {"type": ["string", "null"], "minLength": 1,
                  "x-message": "{where}: must be a stage name (got {value})"},
        "metric": {},
        "input_class": {},
        "tag": {"type": ["string", "null"], "pattern": "=",
                "x-message": "{where}: must be 'key=value' (got {value})"},
        "latency": {
            "type": ["object", "null"],
            "x-message": "{where}: must map percentiles to bounds, e.g. {p99: 50ms} "
                         "(got {value})",
            "propertyNames": {
                "pattern": r"^p\d+(\.\d+)?$",
                "x-message": "{where}.{name}: percentile key must look like p50, p99 or "
                             "p99.9 (got {value})"},
            "additionalProperties": {
                "type": ["number", "string"], "pattern": r"^\s*\d+(\.\d+)?\s*(us|µs|ms|s)?\s*$",
                "x-message": "{where}: latency must be a number with unit us, ms or s "
                             "(got {value})"}},
        "error_rate": {
            "type": ["number", "string", "null"], "pattern": _PERCENTAGE,
            "minimum": 0, "exclusiveMaximum": 1,
            "x-messages": {"type": "{where}: " + _RATE + " (got {value})",
                           "pattern": "{where}: " + _RATE + " (got {value})",
                           "minimum": "{where}: error rate must be in [0, 1) (got {value})",
                           "exclusiveMaximum": "{where}: error rate must be in [0, 1) "
                                               "(got {value})"}},
        "min_throughput": {
            "type": ["number", "null"], "exclusiveMinimum": 0,
            "x-message": "{where}: must be a number of requests/s > 0 (got {value})"},
        "description": {},
    },
    "allOf": [
        {"if": {"required": ["stage"], "properties": {"stage": {"type": "string"}}},
         "then": {"properties": {"metric": {
             "const": "stage",
             "x-message": "{where}: with a stage the metric is 'stage' (got {value})"}}},
         "else": {"properties": {"metric": {
             "enum": list(METRICS),
             "x-message": "{where}: must be one of " + str(list(METRICS)) + " (got {value})"}}}},
        {"not": {"required": ["input_class", "tag"], "properties": {"tag": _NOT_NULL}},
         "x-message": "{where}: give input_class or tag, not both (got {value})"},
        {"if": {"required": ["stage"], "properties": {"stage": {"type": "string"}}},
         "then": {"not": {"anyOf": [
             {"required": ["error_rate"], "properties": {"error_rate": _NOT_NULL}},
             {"required": ["min_throughput"], "properties": {"min_throughput": _NOT_NULL}}]},
             "x-message": "{where}: error_rate and min_throughput apply to requests, not to "
                          "stage {stage}"}},
        {"anyOf": [{"required": ["latency"],
                    "properties": {"latency": {"type": "object", "minProperties": 1}}},
                   {"required": ["error_rate"], "properties": {"error_rate": _NOT_NULL}},
                   {"required": ["min_throughput"],
                    "properties": {"min_throughput": _NOT_NULL}}],
         "x-message": "{where}: no bound given (need latency, error_rate or min_throughput)"},
    ],
}
#: where each of the objective's combined rules ranks among its fields' own problems
_ALL_OF_RANK = (OBJECTIVE_KEYS.index("metric"), OBJECTIVE_KEYS.index("tag"), 100, 101)

SLO_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "SLO file of harness check / compare / capacity (docs/slo.md)",
    "type": "object",
    "x-messages": {
        "type": "must be a mapping with 'objectives' (got {type})",
        "additionalProperties": "unknown top-level key {key} (known: confidence, objectives, "
                                "description)",
        "required": "objectives must be a non-empty list (got None)"},
    "additionalProperties": False,
    "required": ["objectives"],
    "properties": {
        "confidence": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1,
                       "x-message": "confidence must be in (0.5, 1), e.g. 0.95 (got {value})"},
        "objectives": {"type": "array", "minItems": 1, "items": _OBJECTIVE,
                       "x-message": "objectives must be a non-empty list (got {value})"},
        "description": {},
    },
}
_VALIDATOR = Draft202012Validator(SLO_SCHEMA)
_ROOT_RANK = {"type": 0, "additionalProperties": 1, "required": 4}


def _where(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _rank(e: ValidationError) -> tuple[int, int, int]:
    """Report problems in the file's order: the document's own, then each objective's
    (its shape, its fields in ``OBJECTIVE_KEYS`` order, then the rules combining them)."""
    path = list(e.absolute_path)
    if not path:
        return (-1, _ROOT_RANK.get(str(e.validator), 2), 0)
    if path[0] != "objectives" or len(path) < 2:
        return (-1, 3 + (path[0] == "objectives"), 0)
    if len(path) > 2:
        key = str(path[2])
        return (int(path[1]), 2 + (OBJECTIVE_KEYS.index(key) if key in OBJECTIVE_KEYS else 0),
                len(path))
    schema_path = list(e.absolute_schema_path)
    if "allOf" in schema_path:
        return (int(path[1]), 2 + _ALL_OF_RANK[schema_path[schema_path.index("allOf") + 1]], 0)
    return (int(path[1]), _ROOT_RANK.get(str(e.validator), 1), 0)


def _message(e: ValidationError) -> str:
    schema = e.schema if isinstance(e.schema, dict) else {}
    template = (schema.get("x-messages") or {}).get(e.validator) or schema.get("x-message")
    if template is None:  # a rule without its own message: jsonschema's
        return f"{_where(e.absolute_path) or 'the file'}: {e.message}"
    instance = e.instance
    unknown = sorted(set(instance) - set(schema.get("properties") or {})) \
        if e.validator == "additionalProperties" and isinstance(instance, dict) else []
    # (a propertyNames error is at the mapping's path; the bad key is the instance: {name})
    values = {"{where}": _where(e.absolute_path), "{value}": repr(instance),
              "{name}": str(instance), "{type}": type(instance).__name__,
              "{key}": repr(unknown[0]) if unknown else "",
              "{known}": str(sorted(OBJECTIVE_KEYS)),
              "{stage}": repr(instance.get("stage")) if isinstance(instance, dict) else ""}
    for k, v in values.items():
        template = template.replace(k, v)
    return template


def slo_problem(doc: Any) -> str | None:
    """The first problem of an SLO document against the schema (None when it has none)."""
    errors = sorted(_VALIDATOR.iter_errors(doc), key=_rank)
    return _message(errors[0]) if errors else None
