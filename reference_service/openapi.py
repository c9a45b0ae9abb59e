"""The OpenAPI 3.0 description served at ``/openapi.json``, built from the manifest."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _feature_schema(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = (
        {"type": "string", "enum": spec["categories"]} if spec["kind"] == "categorical"
        else {"type": "number"}
    )
    if spec["nullable"]:
        out["nullable"] = True
    return out


def _responses(ok: dict[str, Any]) -> dict[str, Any]:
    errors = {
        "400": "malformed JSON", "404": "unknown model or version",
        "413": "body over the configured limit", "422": "schema violation (names the field)",
        "503": "feature store unavailable",
    }
    out = {"200": {"description": "predictions; header Server-Timing carries the stages",
                   "content": {"application/json": {"schema": ok}}}}
    for code, text in errors.items():
        out[code] = {"description": text, "content": {"application/json": {"schema": ERROR}}}
    return out


def openapi_document(manifest: dict[str, Any], defaults: dict[str, str]) -> dict[str, Any]:
    schema = manifest["features"]
    features = {n: _feature_schema(s) for n, s in schema.items() if s["source"] != "item"}
    instance = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "entity_id": {"type": "integer", "minimum": 0},
            "features": {"type": "object", "properties": features,
                         "additionalProperties": False},
            "item_ids": {"type": "array", "items": {"type": "integer", "minimum": 0},
                         "description": "ranking only: candidate items to score"},
        },
    }
    request = {
        "type": "object", "required": ["instances"], "additionalProperties": False,
        "properties": {"instances": {"type": "array", "minItems": 1, "items": instance},
                       "version": {"type": "string"}},
    }
    prediction = {
        "type": "object",
        "properties": {
            "probability": {"type": "number"}, "label": {"type": "integer"},
            "entity_found": {"type": "boolean"},
            "scores": {"type": "array", "items": {"type": "object", "properties": {
                "item_id": {"type": "integer"}, "score": {"type": "number"}}}},
            "items_not_found": {"type": "array", "items": {"type": "integer"}},
        },
    }
    response = {"type": "object", "properties": {
        "model": {"type": "string"}, "version": {"type": "string"},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": prediction}}}
    names = sorted(manifest["models"])
    versions = sorted({v for m in manifest["models"].values() for v in m["versions"]})
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": names}}
    version_param = {"name": "version", "in": "path", "required": True,
                     "schema": {"type": "string", "enum": versions}}
    body = {"required": True, "content": {"application/json": {"schema": request}}}

    def simple(text: str) -> dict[str, Any]:
        return {"get": {"summary": text, "responses": {"200": {"description": "OK"}}}}

    return {
        "openapi": "3.0.3",
        "info": {"title": "reference_service", "version": "1",
                 "description": f"Reference ML model service. Default versions: {defaults}. "
                                "Unknown entities get the training defaults and "
                                "entity_found=false."},
        "paths": {
            "/v1/models/{name}/predict": {"post": {
                "summary": "predict with the default (or body 'version') version",
                "parameters": [name_param], "requestBody": body,
                "responses": _responses(response)}},
            "/v1/models/{name}/versions/{version}/predict": {"post": {
                "summary": "predict with an explicit version",
                "parameters": [name_param, version_param], "requestBody": body,
                "responses": _responses(response)}},
            "/v1/models": simple("models, versions and the feature schema"),
            "/healthz": simple("process alive"),
            "/readyz": simple("models loaded and feature store reachable (503 otherwise)"),
            "/metrics": simple("Prometheus text exposition, all workers"),
            "/openapi.json": simple("this document"),
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error", "message"],
                                             "properties": {"error": {"type": "string"},
                                                            "message": {"type": "string"},
                                                            "field": {"type": "string"}}}}},
    }
