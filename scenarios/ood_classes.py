"""Out-of-distribution input classes: each turns a production-like request into one that
no model was trained on, in a named way, and says which rejections it expects.

| class | what changes | expected 4xx from a validating service |
|---|---|---|
| covariate_shift | numeric features moved: ``median + 1.5 (x - median) + 2 std`` | 400, 422 |
| null_features | every nullable feature sent as null, optional request ones left out | 400, 422 |
| extreme_values | numeric features at 1000x the training max, negative, or 1e12 | 400, 422 |
| unseen_categories | categorical features set to categories never seen in training | 400, 422 |
| oversized_batch | a batch of 300-600 instances (above the service's limit) | 400, 413, 422 |
| high_dimensional | 500 extra unknown features per instance | 400, 413, 422 |
| unknown_entities | entity ids beyond the feature store's range | 400, 404, 422 |

A 2xx answer is ``accepted``; a status in the class's set is ``rejected`` (counted as a
success of the load test, tagged ``outcome=rejected``); anything else is a failure.
Pure (no Locust): the tests draw from it directly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from scenarios.traffic import Request, RequestStream, TrafficModel

__all__ = ["CLASSES", "EXPECTED_REJECTIONS", "make_ood", "overridable"]

EXTRA_FEATURES = 500
OVERSIZED_BATCH = (300, 600)


def overridable(model: TrafficModel, name: str) -> list[str]:
    """Features a request may send for this model: the request ones and the store ones
    (sent values override the store row); item features come only from the store."""
    return [f for f in model.model_features(name, model.versions.get(name))
            if model.schema[f]["source"] != "item"]


def _numeric(model: TrafficModel, name: str) -> list[str]:
    return [f for f in overridable(model, name) if model.schema[f]["kind"] == "numeric"]


def _categorical(model: TrafficModel, name: str) -> list[str]:
    return [f for f in overridable(model, name) if model.schema[f]["kind"] == "categorical"]


def _pick_model(stream: RequestStream, need: Callable[[str], list[str]]) -> Request:
    """A production request for a model that has what the class changes."""
    candidates = [m for m in stream.model.models if need(m)] or stream.model.models
    return stream.next(stream.rng.choice(candidates))


def _instances(req: Request) -> list[dict[str, Any]]:
    return req.body["instances"]


def covariate_shift(stream: RequestStream) -> Request:
    m = stream.model
    req = _pick_model(stream, lambda n: _numeric(m, n))
    stats = m.stats.get("features", {})
    for inst in _instances(req):
        feats = inst.setdefault("features", {})
        for f in _numeric(m, req.model):
            st = stats.get(f, {})
            median = st.get("quantiles", {}).get("0.5", m.schema[f].get("default", 0.0))
            std = st.get("std") or abs(median) or 1.0
            x = m.draw_feature(f, stream.rng)
            feats[f] = round(median + 1.5 * (x - median) + 2.0 * std, 4)
    return req


def null_features(stream: RequestStream) -> Request:
    m = stream.model
    req = _pick_model(stream, lambda n: overridable(m, n))
    for inst in _instances(req):
        feats = inst.setdefault("features", {})
        for f in overridable(m, req.model):
            spec = m.schema[f]
            if spec.get("nullable", True):
                feats[f] = None
            elif not spec.get("required", False):
                feats.pop(f, None)
    return req


def extreme_values(stream: RequestStream) -> Request:
    m, rng = stream.model, stream.rng
    req = _pick_model(stream, lambda n: _numeric(m, n))
    for inst in _instances(req):
        feats = inst.setdefault("features", {})
        for f in _numeric(m, req.model):
            top = abs(float(m.schema[f].get("max", 1.0))) or 1.0
            feats[f] = rng.choice((top * 1000.0, -top * 1000.0, 1e12, -1.0))
    return req


def unseen_categories(stream: RequestStream) -> Request:
    m, rng = stream.model, stream.rng
    req = _pick_model(stream, lambda n: _categorical(m, n))
    for inst in _instances(req):
        feats = inst.setdefault("features", {})
        for f in _categorical(m, req.model):
            feats[f] = f"unseen_{f}_{rng.randint(0, 999)}"
    return req


def oversized_batch(stream: RequestStream) -> Request:
    m, rng = stream.model, stream.rng
    entity_models = [n for n in m.models if m.model_input(n) != "items"] or m.models
    model = rng.choice(entity_models)
    req = stream.next(model)
    size = rng.randint(*OVERSIZED_BATCH)
    instances = [stream.instance(model) for _ in range(size)]
    return Request(req.model, req.version, req.path, req.name, {"instances": instances})


def high_dimensional(stream: RequestStream) -> Request:
    rng = stream.rng
    req = stream.next()
    for inst in _instances(req):
        feats = inst.setdefault("features", {})
        for k in range(EXTRA_FEATURES):
            feats[f"extra_{k:04d}"] = round(rng.gauss(0.0, 1.0), 6)
    return req


def unknown_entities(stream: RequestStream) -> Request:
    m, rng = stream.model, stream.rng
    req = stream.next()
    n = m.entities.n
    for inst in _instances(req):
        inst["entity_id"] = rng.randint(n, n * 100)
    return req


CLASSES: dict[str, Callable[[RequestStream], Request]] = {
    "covariate_shift": covariate_shift,
    "null_features": null_features,
    "extreme_values": extreme_values,
    "unseen_categories": unseen_categories,
    "oversized_batch": oversized_batch,
    "high_dimensional": high_dimensional,
    "unknown_entities": unknown_entities,
}
_VALIDATION = frozenset({400, 422})
EXPECTED_REJECTIONS: dict[str, frozenset[int]] = {
    "production": frozenset(),
    "covariate_shift": _VALIDATION,
    "null_features": _VALIDATION,
    "extreme_values": _VALIDATION,
    "unseen_categories": _VALIDATION,
    "oversized_batch": _VALIDATION | {413},
    "high_dimensional": _VALIDATION | {413},
    "unknown_entities": _VALIDATION | {404},
}


def make_ood(cls: str, stream: RequestStream) -> Request:
    """A request of class ``cls`` (``production`` for an unchanged one)."""
    if cls == "production":
        return stream.next()
    try:
        make = CLASSES[cls]
    except KeyError:
        raise ValueError(f"OOD class must be one of {sorted(CLASSES)} (got {cls!r})") from None
    return make(stream)


def pick_class(rng: random.Random, shares: list[tuple[str, float]]) -> str:
    """Draw a class by cumulative share; the remainder (1 - sum) is ``production``."""
    u = rng.random()
    acc = 0.0
    for name, share in shares:
        acc += share
        if u < acc:
            return name
    return "production"
