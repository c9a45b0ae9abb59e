"""Span maps: which stage a span's time belongs to.

A span map is a JSON file (validated by the JSON Schema below)::

    {"name": "default",
     "rules": [{"stage": "fetch", "attribute": "db.system"},
               {"stage": "infer", "name_regex": "(?i)infer|predict"},
               {"stage": null, "name": "* http receive"}, ...]}

A rule matches a span when every matcher it gives matches: ``name`` (a glob) and
``name_regex`` (searched anywhere) on the span name, ``kind`` (server, client, internal,
producer, consumer), ``attribute`` (the span has this attribute) and ``attributes``
(``{key: glob}``). The first matching rule gives the span's stage; ``"stage": null`` says
"no stage of its own" explicitly. A span no rule matches has no stage of its own either:
its time belongs to the nearest ancestor that has one (or to the service span itself).

The bundled default needs no configuration: database, cache and RPC client spans
(``db.system``, ``rpc.system``) and outgoing HTTP calls are ``fetch``; spans named like a
model call are ``infer``; spans named like encoding are ``serialize``; a span named exactly
like a stage keeps its name (the reference service's ``fetch``, ``infer``, ``serialize``).
The ASGI instrumentation's ``http receive`` / ``http send`` spans have no stage (their names
carry the route, ``POST /predict http send``, which would otherwise read as ``infer``).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from harness.run.collectors.traces.spans import KINDS, Span

__all__ = ["DEFAULT_RULES", "SCHEMA", "SpanMap", "SpanRule", "load_span_map"]

MAX_FILE_BYTES = 1_000_000
_STAGE = r"^[A-Za-z0-9_.-]{1,40}$"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["rules"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "description": {"type": "string"},
        "rules": {"type": "array", "maxItems": 500, "items": {
            "type": "object", "required": ["stage"], "additionalProperties": False,
            "minProperties": 2,
            "properties": {
                "stage": {"anyOf": [{"type": "string", "pattern": _STAGE}, {"type": "null"}]},
                "name": {"type": "string", "minLength": 1},
                "name_regex": {"type": "string", "minLength": 1},
                "kind": {"enum": list(KINDS)},
                "attribute": {"type": "string", "minLength": 1},
                "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
            }}},
    },
}

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"stage": "fetch", "name": "fetch"},
    {"stage": "infer", "name": "infer"},
    {"stage": "serialize", "name": "serialize"},
    # ASGI instrumentation's spans around each receive()/send() of the request and response
    # ("POST /v2/models/{model_name}/infer http send"): named after the route, so the name
    # rules below would make them infer or predict; they are the framework's, no stage
    {"stage": None, "attribute": "asgi.event.type"},
    {"stage": None, "name": "* http receive"},
    {"stage": None, "name": "* http send"},
    {"stage": None, "name": "* websocket receive"},
    {"stage": None, "name": "* websocket send"},
    {"stage": "fetch", "attribute": "db.system"},
    {"stage": "fetch", "attribute": "db.system.name"},
    {"stage": "fetch", "attribute": "rpc.system", "kind": "client"},
    {"stage": "fetch", "attribute": "messaging.system"},
    {"stage": "fetch", "kind": "client"},
    {"stage": "infer", "name_regex": r"(?i)infer|predict|model|forward|score"},
    {"stage": "serialize", "name_regex": r"(?i)serial|encod|decod|json|marshal|render"},
    {"stage": "fetch", "name_regex": r"(?i)fetch|feature|lookup|cache|store|query"},
)


@dataclass(frozen=True)
class SpanRule:
    stage: str | None
    name: str | None = None
    name_regex: re.Pattern[str] | None = None
    kind: str | None = None
    attribute: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    def matches(self, span: Span) -> bool:
        if self.name is not None and not fnmatch.fnmatchcase(span.name, self.name):
            return False
        if self.name_regex is not None and not self.name_regex.search(span.name):
            return False
        if self.kind is not None and span.kind != self.kind:
            return False
        if self.attribute is not None and self.attribute not in span.attributes:
            return False
        return all(k in span.attributes and fnmatch.fnmatchcase(span.attributes[k], g)
                   for k, g in self.attributes)


@dataclass(frozen=True)
class SpanMap:
    name: str
    rules: tuple[SpanRule, ...]

    def stage_of(self, span: Span) -> str | None:
        for rule in self.rules:
            if rule.matches(span):
                return rule.stage
        return None

    def stages(self) -> set[str]:
        return {r.stage for r in self.rules if r.stage}


def _build(doc: Any, where: str) -> SpanMap:
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc),
                    key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        field = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ValueError(f"span map {where}: {field}: {e.message}")
    rules = []
    for i, r in enumerate(doc["rules"]):
        try:
            regex = re.compile(r["name_regex"]) if "name_regex" in r else None
        except re.error as exc:
            raise ValueError(f"span map {where}: rules/{i}/name_regex is not a regular "
                             f"expression ({exc}; got {r['name_regex']!r})") from None
        rules.append(SpanRule(r["stage"], r.get("name"), regex, r.get("kind"),
                              r.get("attribute"), tuple(sorted((r.get("attributes") or {})
                                                               .items()))))
    return SpanMap(str(doc.get("name") or where), tuple(rules))


def load_span_map(path: str | Path | None = None) -> SpanMap:
    """The default map, or the one in ``path`` (ValueError naming the field and the value)."""
    if path is None:
        return _build({"name": "default", "rules": list(DEFAULT_RULES)}, "default")
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"span map {p}: larger than {MAX_FILE_BYTES} bytes")
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise ValueError(f"span map {p}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"span map {p}: not JSON ({exc})") from None
    return _build(doc, str(p))
