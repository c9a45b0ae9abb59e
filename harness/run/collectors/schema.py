"""JSON Schema checks of the files a run reads, with errors that name the field, the rule
and the value: ``rules[0]: stage must be a non-empty string (got '')``.

The schemas live in harness/run/schemas/ (``stagemap.schema.json`` for
harness/run/collectors/stagemap.py, ``faults.schema.json`` for the reference service's
fault file as harness/run/faultfile.py reads it); editors and other tools can use them
as they are. Each subschema says its rule in words in ``description`` ("a non-empty
list"); an object may give its own wording per failing keyword in ``x-messages``
(placeholders ``{field}``, ``{value}``, ``{type}``, ``{unknown}``, ``{allowed}``).
Only the first problem is reported: the one nearest the top of the document, an unknown
key before a missing or wrong one.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

__all__ = ["SCHEMA_DIR", "Problem", "field_path", "first_problem", "load_schema", "problems"]

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
# An unknown key explains the other errors of its object (a misspelt matcher is also a
# missing one); an alternative (anyOf) that failed is explained by its fields' own errors.
_FIRST = {"additionalProperties": 0, "required": 1, "type": 2}
_LAST = ("anyOf", "oneOf")


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``harness/run/schemas/NAME.schema.json`` (checked to be a valid schema)."""
    return dict(_validator(name).schema)


def field_path(path: Any) -> str:
    """``("rules", 0, "file")`` -> ``rules[0].file``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _order(error: ValidationError) -> tuple[bool, int, list[str], int]:
    path = [f"{p:08d}" if isinstance(p, int) else str(p) for p in error.absolute_path]
    return error.validator in _LAST, len(path), path, _FIRST.get(str(error.validator), 5)


class Problem(NamedTuple):
    """One broken rule: ``where`` the object holding the field (``rules[0]``; empty at the
    top), ``text`` the field, the rule and the value."""

    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}" if self.where else self.text


def _problem(error: ValidationError) -> Problem:
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    template = (schema.get("x-messages") or {}).get(str(error.validator))
    if template is not None:  # the object's own wording, about the object
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(k for k in value if k not in allowed) if isinstance(value, dict) else []
        obj = field_path(path)
        text = template.format(field=obj, value=repr(value), type=type(value).__name__,
                               unknown=unknown, allowed=allowed)
        return Problem("" if "{field}" in template else obj, text)
    if error.validator == "required" and isinstance(value, dict):
        missing = [k for k in error.validator_value if k not in value]
        return Problem(field_path(path), f"{missing[0] if missing else '?'} is required")
    rule = schema.get("description") or error.message
    if not path:
        return Problem("", f"must be {rule} (got {value!r})")
    # the field is the last key with the indices after it: models[2], not 2
    named = max((i for i, part in enumerate(path) if isinstance(part, str)), default=0)
    return Problem(field_path(path[:named]),
                   f"{field_path(path[named:])} must be {rule} (got {value!r})")


def problems(doc: Any, name: str) -> list[Problem]:
    """Every problem of ``doc`` against schema ``name``, the one to report first first."""
    errors = sorted(_validator(name).iter_errors(doc), key=_order)
    return [_problem(e) for e in errors]


def first_problem(doc: Any, name: str) -> Problem | None:
    """The problem to report (see the module doc), or None when ``doc`` is valid."""
    found = problems(doc, name)
    return found[0] if found else None
