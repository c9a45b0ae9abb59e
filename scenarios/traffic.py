"""The traffic model shared by the scenarios: which model, which entity, which features.

It reads the feature schema and the models from the artifacts' ``manifest.json`` and the
training distributions from ``reference_stats.json``, found in ``--artifacts`` /
``SCENARIO_ARTIFACTS``, else ``REFSVC_ARTIFACTS``, else ``<repo>/artifacts``. When they are
not on this machine, :meth:`TrafficModel.from_service` reads the schema from the target's
``GET /v1/models`` and the store size from ``GET /readyz``; numeric features are then drawn
from a crude CDF through each feature's min, median and max (documented in
docs/scenarios.md: use the artifacts when the distributions matter).

- Entities: Zipf-like popularity, P(rank r) ~ r^-s over the store's entity ids, hot ids
  spread over the id range by a permutation seeded by the run seed (all users share the
  hot set, as production does). Ranking candidates: the same over item ids.
- Request features: drawn per instance from the training distributions (independently:
  the stats hold no joint distribution; store features come from the store row of the
  entity, so their correlations are the real ones).
- Models: a weighted mix; batches of 1 mostly, sometimes more (``max_batch``).
- Seeded: :meth:`stream` gives user ``i`` of worker ``w`` its own ``random.Random`` derived
  from (seed, w, i); the same seed and user count give the same request sequences.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.distributions import CategoricalSampler, NumericSampler, sampler_for

__all__ = ["TrafficModelError", "TrafficModel", "Request", "RequestStream", "Zipf",
           "artifacts_dir", "request_name", "DEFAULT_MIX"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# Fraud scoring runs on every payment, ranking on every page view, churn in batches.
DEFAULT_MIX = {"fraud": 0.5, "ranking": 0.3, "churn": 0.2}
BATCH_SHARE = 0.2  # requests carrying more than one instance
ITEMS_RANGE = (10, 100)  # ranking candidates per request


class TrafficModelError(ValueError):
    """The model cannot be built: missing artifacts, bad option; says which and why."""


def artifacts_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("REFSVC_ARTIFACTS")
    return Path(env) if env else REPO_ROOT / "artifacts"


def request_name(path: str) -> str:
    """Low-cardinality request name: ``predict fraud`` for the reference service's
    prediction paths (a version in the path is kept: ``predict fraud v2``), else the path
    with numeric and long hexadecimal segments replaced by ``:id``, query dropped."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if len(parts) >= 4 and parts[:2] == ["v1", "models"] and parts[-1] == "predict":
        if len(parts) == 4:
            return f"predict {parts[2]}"
        if len(parts) == 6 and parts[3] == "versions":
            return f"predict {parts[2]} {parts[4]}"
    out = [":id" if p.isdigit() or (len(p) >= 16 and all(c in "0123456789abcdef-" for c in
                                                            p.lower())) else p
           for p in parts]
    return "/" + "/".join(out)


class Zipf:
    """Ranks 1..n with P(r) ~ r^-s, mapped to ids 0..n-1 by a seeded permutation."""

    def __init__(self, n: int, s: float, seed: int | str):
        if n < 1:
            raise TrafficModelError(f"zipf population must be >= 1 (got {n})")
        if not s > 0:
            raise TrafficModelError(f"zipf exponent must be > 0 (got {s!r})")
        self.n, self.s = n, s
        acc, cum = 0.0, []
        for r in range(1, n + 1):
            acc += r ** -s
            cum.append(acc)
        self.cum = [c / acc for c in cum]
        self.ids = list(range(n))
        random.Random(f"zipf:{seed}").shuffle(self.ids)

    def probability(self, rank: int) -> float:
        """P(the rank-th most popular id) (rank from 1)."""
        return self.cum[rank - 1] - (self.cum[rank - 2] if rank > 1 else 0.0)

    def draw(self, rng: random.Random) -> int:
        return self.ids[min(bisect.bisect_left(self.cum, rng.random()), self.n - 1)]

    def rank_of(self, entity_id: int) -> int:
        return self.ids.index(entity_id) + 1


@dataclass(frozen=True)
class Request:
    model: str
    version: str | None
    path: str
    name: str
    body: dict[str, Any]

    @property
    def batch(self) -> int:
        return len(self.body["instances"])

    def payload(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass
class TrafficModel:
    manifest: Mapping[str, Any]
    stats: Mapping[str, Any]
    seed: int = 1
    zipf_s: float = 1.1
    mix: Mapping[str, float] | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    max_batch: int = 16

    def __post_init__(self) -> None:
        models = self.manifest.get("models") or {}
        if not models:
            raise TrafficModelError("the manifest lists no models")
        self.schema: dict[str, Any] = dict(self.manifest.get("features") or {})
        for name, version in self.versions.items():
            if name not in models or version not in models[name]["versions"]:
                raise TrafficModelError(
                    f"model version {name}={version} is not in the artifacts (have "
                    f"{sorted((m, v) for m in models for v in models[m]['versions'])})")
        if self.max_batch < 1:
            raise TrafficModelError(f"max_batch must be >= 1 (got {self.max_batch})")
        weights = dict(self.mix) if self.mix else {
            m: DEFAULT_MIX.get(m, sum(DEFAULT_MIX.values()) / len(DEFAULT_MIX)) for m in models}
        unknown = sorted(set(weights) - set(models))
        if unknown:
            raise TrafficModelError(f"model mix names unknown models {unknown} "
                                    f"(known: {sorted(models)})")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise TrafficModelError(f"model mix weights must be >= 0 with a positive sum "
                                    f"(got {weights})")
        self.models = [m for m in sorted(weights) if weights[m] > 0]
        total = sum(weights[m] for m in self.models)
        acc, self._mix_cum = 0.0, []
        for m in self.models:
            acc += weights[m] / total
            self._mix_cum.append(acc)
        self.mix_weights = {m: weights[m] / total for m in self.models}
        store = self.manifest.get("store") or {}
        self.entities = Zipf(int(store.get("entities", 1)), self.zipf_s, f"{self.seed}:entities")
        self.items = Zipf(int(store.get("items", 1)), self.zipf_s, f"{self.seed}:items")
        feats = self.stats.get("features") or {}
        self.samplers: dict[str, NumericSampler | CategoricalSampler] = {}
        for name, spec in self.schema.items():
            try:
                self.samplers[name] = sampler_for(name, feats.get(name, {}), spec)
            except (ValueError, KeyError) as exc:
                raise TrafficModelError(f"feature {name!r}: {exc}") from exc

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_artifacts(cls, directory: str | Path | None = None, **kw: Any) -> TrafficModel:
        d = artifacts_dir(str(directory) if directory else None)
        try:
            manifest = json.loads((d / "manifest.json").read_text())
            stats = json.loads((d / "reference_stats.json").read_text())
        except OSError as exc:
            raise TrafficModelError(f"artifacts not readable in {str(d)!r}: "
                                    f"{exc.strerror or exc}; train them "
                                    f"(python -m reference_service.train) or set "
                                    f"--artifacts / SCENARIO_ARTIFACTS") from exc
        except json.JSONDecodeError as exc:
            raise TrafficModelError(f"artifacts in {str(d)!r} are not valid JSON: {exc}") \
                from exc
        return cls(manifest, stats, **kw)

    @classmethod
    def from_service(cls, base_url: str, timeout_s: float = 5.0, **kw: Any) -> TrafficModel:
        """Schema from ``GET /v1/models``; entity count from ``GET /readyz`` (approximate
        distributions: no reference statistics are served)."""
        def get(path: str) -> Any:
            try:
                with urllib.request.urlopen(base_url.rstrip("/") + path,
                                            timeout=timeout_s) as resp:
                    return json.loads(resp.read())
            except (OSError, ValueError) as exc:
                raise TrafficModelError(f"cannot read {path} from {base_url}: {exc}") from exc
        listing = get("/v1/models")
        ready = get("/readyz").get("store", {})
        manifest = {"models": listing["models"], "features": listing["features"],
                    "store": {"entities": int(ready.get("max_entity_id", 0)) + 1,
                              "items": int(ready.get("max_item_id", 0)) + 1}}
        return cls(manifest, {"features": {}}, **kw)

    # -- sampling -------------------------------------------------------------------------
    def stream(self, user_index: int = 0, worker_index: int = 0) -> RequestStream:
        return RequestStream(self, random.Random(f"{self.seed}:{worker_index}:{user_index}"))

    def model_input(self, model: str) -> str:
        return str(self.manifest["models"][model].get("input", "entity"))

    def model_features(self, model: str, version: str | None = None) -> list[str]:
        entry = self.manifest["models"][model]
        v = version or self.versions.get(model) or entry["default_version"]
        return list(entry["versions"][v]["features"])

    def request_features(self, model: str) -> list[str]:
        return [f for f in self.model_features(model, self.versions.get(model))
                if self.schema[f]["source"] == "request"]

    def path(self, model: str) -> str:
        version = self.versions.get(model)
        if version:
            return f"/v1/models/{model}/versions/{version}/predict"
        return f"/v1/models/{model}/predict"

    def draw_feature(self, name: str, rng: random.Random) -> Any:
        return self.samplers[name].draw(rng)


class RequestStream:
    """One user's reproducible sequence of production-like requests."""

    def __init__(self, model: TrafficModel, rng: random.Random):
        self.model = model
        self.rng = rng

    def batch_size(self) -> int:
        m, rng = self.model, self.rng
        if m.max_batch == 1 or rng.random() >= BATCH_SHARE:
            return 1
        size = 2
        while size < m.max_batch and rng.random() < 0.8:  # geometric: mean batch ~ 6
            size += 1
        return size

    def instance(self, model: str) -> dict[str, Any]:
        m, rng = self.model, self.rng
        inst: dict[str, Any] = {"entity_id": m.entities.draw(rng)}
        feats = {f: m.draw_feature(f, rng) for f in m.request_features(model)}
        if feats:
            inst["features"] = feats
        if m.model_input(model) == "items":
            n = rng.randint(*ITEMS_RANGE)
            inst["item_ids"] = list(dict.fromkeys(m.items.draw(rng) for _ in range(n)))
        return inst

    def next(self, model: str | None = None) -> Request:
        m = self.model
        if model is None:
            j = bisect.bisect_left(m._mix_cum, self.rng.random())
            model = m.models[min(j, len(m.models) - 1)]
        n = 1 if m.model_input(model) == "items" else self.batch_size()
        body = {"instances": [self.instance(model) for _ in range(n)]}
        path = m.path(model)
        return Request(model, m.versions.get(model), path, request_name(path), body)
