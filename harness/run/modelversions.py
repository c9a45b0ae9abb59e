"""Which models, in which versions, a target serves: read once before the load, for run.json.

Two protocols are asked, in order:

1. ``GET /v1/models`` (the reference service and the FastAPI example):
   ``{"models": {name: {"versions": {...}, "default_version": ...}}}`` or
   ``{"models": [{"name", "versions", "default_version"}, ...]}``;
2. when that is absent, the V2 inference protocol (KServe, MLServer, Triton):
   ``POST /v2/repository/index`` (``[{"name", "version", "state"}, ...]``, the model
   repository extension) and ``GET /v2/models/{name}`` (``{"name", "versions",
   "platform"}``) for each model it lists.

The answer goes to run.json ``target``: ``{"models": {name: {"versions", "default_version",
...}}, "models_source": "/v1/models" | "/v2/repository/index"}``; ``{}`` when the target
answers neither. The target is not trusted: the whole probe has :data:`DEADLINE_S` (it runs
in a thread the caller waits for at most that long, so a target that answers one byte a
second cannot hold the run's start), each body is read up to :data:`MAX_BODY_BYTES`, at most
:data:`MAX_MODELS` models are kept and names and versions are cut to
:data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["DEADLINE_S", "MAX_BODY_BYTES", "MAX_MODELS", "MAX_TEXT", "model_versions"]

DEADLINE_S = 3.0
MAX_BODY_BYTES = 1_000_000
MAX_MODELS = 50
MAX_TEXT = 200


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0.05:
            raise TimeoutError("the model version probe ran out of time")
        return left


def _get_json(url: str, deadline: _Deadline, body: bytes | None = None) -> Any:
    """The JSON a request answers; None for an HTTP error, a bad or oversize body."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                 headers={"Accept": "application/json",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=deadline.left()) as resp:  # noqa: S310
            raw = resp.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError:
        return None
    if len(raw) > MAX_BODY_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def _versions(value: object) -> list[str] | None:
    if isinstance(value, dict):
        value = list(value)
    if not isinstance(value, list):
        return None
    return sorted({t for t in map(_text, value[:MAX_MODELS]) if t is not None})


def _v1(body: object) -> dict[str, Any] | None:
    models = body.get("models") if isinstance(body, dict) else None
    if isinstance(models, dict):  # {name: {...}} (the reference service's form)
        models = [{"name": k, **v} for k, v in models.items() if isinstance(v, dict)]
    if not isinstance(models, list):
        return None
    found: dict[str, Any] = {}
    for m in models[:MAX_MODELS]:
        name = _text(m.get("name")) if isinstance(m, dict) else None
        if name is not None:
            found[name] = {"versions": _versions(m.get("versions")),
                           "default_version": _text(m.get("default_version"))}
    return found


def _v2(url: str, deadline: _Deadline) -> dict[str, Any] | None:
    index = _get_json(url + "/v2/repository/index", deadline, body=b"{}")
    if not isinstance(index, list):
        return None
    found: dict[str, Any] = {}
    for entry in index[:MAX_MODELS]:
        name = _text(entry.get("name")) if isinstance(entry, dict) else None
        if name is None:
            continue
        model = found.setdefault(name, {"versions": [], "default_version": None})
        version, state = _text(entry.get("version")), _text(entry.get("state"))
        if version is not None and version not in model["versions"]:
            model["versions"] = sorted([*model["versions"], version])
        if state is not None:
            model.setdefault("states", {})[version or ""] = state
    for name, model in found.items():
        meta = _get_json(f"{url}/v2/models/{urllib.parse.quote(name, safe='')}", deadline)
        if isinstance(meta, dict):
            listed = _versions(meta.get("versions")) or []
            model["versions"] = sorted(set(model["versions"]) | set(listed))
            if _text(meta.get("platform")):
                model["platform"] = _text(meta.get("platform"))
    return found


def _probe(url: str, deadline: _Deadline) -> dict[str, Any]:
    try:
        found = _v1(_get_json(url + "/v1/models", deadline))
        if found is not None:
            return {"models": found, "models_source": "/v1/models"}
        found = _v2(url, deadline)
        if found is not None:
            return {"models": found, "models_source": "/v2/repository/index"}
    except (OSError, ValueError, http.client.HTTPException):
        pass  # a refused connection, a timeout, a torn answer: not known
    return {}


def model_versions(url: str, deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    """The models the target at ``url`` reports (see the module doc); never raises, returns
    within about ``deadline_s``."""
    box: dict[str, dict[str, Any]] = {}
    base = url.rstrip("/")
    thread = threading.Thread(target=lambda: box.setdefault("found", _probe(
        base, _Deadline(deadline_s))), name="model-versions", daemon=True)
    thread.start()
    thread.join(deadline_s + 0.2)
    return box.get("found", {})
