"""Parsing and validating prediction requests; every violation is an ApiError naming the
field and the rule, which the app turns into a JSON error response (never a 500)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_ENTITY_ID = 2**63 - 1


class ApiError(Exception):
    """A client error with its HTTP status, machine-readable kind, and offending field."""

    def __init__(self, status: int, kind: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.kind, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class Instance:
    """One validated instance: entity id (or None), request features, ranking item ids."""

    entity_id: int | None
    features: dict[str, Any]
    item_ids: tuple[int, ...] | None


def _invalid(field: str, rule: str) -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {rule}", field)


def parse_json(raw: bytes) -> Any:
    """Decode a body; undecodable or malformed JSON is a 400."""
    if not raw:
        raise ApiError(400, "bad_json", "request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_json", f"request body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"malformed JSON: {exc.msg} at line {exc.lineno} "
                                        f"column {exc.colno}") from exc
    except RecursionError as exc:
        raise ApiError(400, "bad_json", "malformed JSON: nested too deeply") from exc


def _int_id(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, f"must be an integer (got {type(value).__name__})")
    if not 0 <= value <= MAX_ENTITY_ID:
        raise _invalid(field, f"must be between 0 and {MAX_ENTITY_ID} (got {value})")
    return value


def _feature_value(spec: dict[str, Any], value: Any, field: str) -> Any:
    if value is None:
        if not spec["nullable"]:
            raise _invalid(field, "must not be null")
        return None
    if spec["kind"] == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(field, f"must be a number (got {type(value).__name__})")
        try:
            number = float(value)
        except OverflowError:  # a JSON integer beyond the float range, e.g. 1 followed by 400 0s
            raise _invalid(field, "must be finite (got an integer too large for a float)") \
                from None
        if not math.isfinite(number):
            raise _invalid(field, f"must be finite (got {value!r})")
        return number
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string category (got {type(value).__name__})")
    if value not in spec["categories"]:
        raise _invalid(field, f"unknown category {value!r}; allowed: {spec['categories']}")
    return value


@dataclass(frozen=True)
class RequestRules:
    """What one model version accepts."""

    model: str
    version_features: tuple[str, ...]
    accepted_features: frozenset[str]  # any version of the model may be overridden
    schema: dict[str, dict[str, Any]]
    takes_items: bool
    max_batch: int
    max_items: int


def parse_instances(body: Any, rules: RequestRules) -> list[Instance]:
    """Validate ``{"instances": [...], "version"?: str}``; return the instances."""
    if not isinstance(body, dict):
        raise _invalid("body", f"must be a JSON object (got {type(body).__name__})")
    extra = set(body) - {"instances", "version"}
    if extra:
        raise _invalid(sorted(extra)[0], "unknown top-level field; allowed: instances, version")
    if "instances" not in body:
        raise _invalid("instances", "is required")
    items = body["instances"]
    if not isinstance(items, list):
        raise _invalid("instances", f"must be a list (got {type(items).__name__})")
    if not 1 <= len(items) <= rules.max_batch:
        raise _invalid("instances",
                       f"must hold 1 to {rules.max_batch} instances (got {len(items)})")
    allowed_keys = {"entity_id", "features"} | ({"item_ids"} if rules.takes_items else set())
    out = []
    for i, inst in enumerate(items):
        where = f"instances[{i}]"
        if not isinstance(inst, dict):
            raise _invalid(where, f"must be an object (got {type(inst).__name__})")
        extra = set(inst) - allowed_keys
        if extra:
            raise _invalid(f"{where}.{sorted(extra)[0]}",
                           f"unknown field; allowed: {sorted(allowed_keys)}")
        entity = inst.get("entity_id")
        if entity is not None:
            entity = _int_id(entity, f"{where}.entity_id")
        feats_in = inst.get("features", {})
        if not isinstance(feats_in, dict):
            raise _invalid(f"{where}.features", "must be an object of feature name to value")
        feats = {}
        for name, value in feats_in.items():
            field = f"{where}.features.{name}"
            if name not in rules.accepted_features:
                raise _invalid(field, f"unknown feature for model {rules.model!r}; "
                                      f"allowed: {sorted(rules.accepted_features)}")
            feats[name] = _feature_value(rules.schema[name], value, field)
        for name in rules.version_features:
            spec = rules.schema[name]
            if name in feats:
                continue
            if entity is None and spec["source"] == "store":
                raise _invalid(f"{where}.features.{name}",
                               "is required when no entity_id is given")
            if spec["required"]:
                raise _invalid(f"{where}.features.{name}", "is required")
        item_ids = None
        if rules.takes_items:
            raw = inst.get("item_ids")
            if not isinstance(raw, list):
                raise _invalid(f"{where}.item_ids", "is required: a list of item ids")
            if not 1 <= len(raw) <= rules.max_items:
                raise _invalid(f"{where}.item_ids",
                               f"must hold 1 to {rules.max_items} ids (got {len(raw)})")
            item_ids = tuple(_int_id(v, f"{where}.item_ids[{j}]") for j, v in enumerate(raw))
        out.append(Instance(entity, feats, item_ids))
    return out
