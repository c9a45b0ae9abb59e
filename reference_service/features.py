"""Feature assembly, the ``fetch`` stage: store rows merged with request features into the
model's numpy input matrix.

Unknown entity (documented behaviour, the same for both stores): the store features take
the training defaults (median for numeric, most frequent category for categoricals) and
the prediction says ``"entity_found": false``. Unknown ranking items do the same with the
item defaults and are listed in ``"items_not_found"``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reference_service.faults import ModelFaults
from reference_service.store.base import FeatureStore, Row, inject_store_faults
from reference_service.validation import Instance

NAN = float("nan")
_MISSING = object()


@dataclass
class Assembled:
    """The model input of one request and what the response must say about it."""

    X: np.ndarray
    entity_found: list[bool]
    row_slices: list[slice]  # rows of X belonging to each instance
    items_not_found: list[list[int]]
    missing: dict[str, int]  # feature -> instances where it was absent (renamed upstream)
    faults_fired: list[str]
    nulls: dict[str, int] = field(default_factory=dict)  # feature -> rows where it was null


class FeatureAssembler:
    """Builds one model version's input rows; categoricals become their integer codes."""

    def __init__(self, features: Sequence[str], schema: dict[str, dict[str, Any]]):
        self.features = tuple(features)
        self.schema = schema
        self.codes = {
            name: {c: float(i) for i, c in enumerate(spec["categories"])}
            for name, spec in schema.items() if spec["kind"] == "categorical"
        }
        self.user_defaults = {n: s["default"] for n, s in schema.items() if s["source"] == "store"}
        self.item_defaults = {n: s["default"] for n, s in schema.items() if s["source"] == "item"}
        self.request_defaults = {
            n: s["default"] for n, s in schema.items() if s["source"] == "request"}

    def encode(self, merged: dict[str, Any], missing: dict[str, int],
               nulls: dict[str, int] | None = None) -> list[float]:
        row = []
        codes = self.codes
        for name in self.features:
            v = merged.get(name, _MISSING)
            if v is _MISSING:
                missing[name] = missing.get(name, 0) + 1
                row.append(NAN)
            elif v is None:
                if nulls is not None:
                    nulls[name] = nulls.get(name, 0) + 1
                row.append(NAN)
            elif name in codes:
                row.append(codes[name].get(v, NAN))
            else:
                row.append(float(v))
        return row

    def assemble(self, instances: list[Instance], store: FeatureStore, faults: ModelFaults,
                 rng: random.Random) -> Assembled:
        fired: list[str] = []
        if faults.store_latency or faults.store_errors:
            if inject_store_faults(faults.store_latency, faults.store_errors, rng) > 0:
                fired.append("store_latency")
        ids = [i.entity_id for i in instances if i.entity_id is not None]
        users = store.fetch_users(ids) if ids else {}
        item_ids = [j for i in instances for j in (i.item_ids or ())]
        items = store.fetch_items(item_ids) if item_ids else {}
        nulled = _fires(faults.feature_null, rng)
        renamed = _fires(faults.feature_rename, rng)
        if nulled:
            fired.append("feature_null")
        if renamed:
            fired.append("feature_rename")

        rows: list[list[float]] = []
        found: list[bool] = []
        slices: list[slice] = []
        not_found: list[list[int]] = []
        missing: dict[str, int] = {}
        nulls: dict[str, int] = {}
        for inst in instances:
            user: Row | None = users.get(inst.entity_id) if inst.entity_id is not None else None
            found.append(user is not None)
            base = {**self.request_defaults, **(user if user is not None else self.user_defaults)}
            base.update(inst.features)
            start = len(rows)
            absent: list[int] = []
            for item_id in inst.item_ids or (None,):
                merged = base
                if item_id is not None:
                    item = items.get(item_id)
                    if item is None:
                        absent.append(item_id)
                        item = self.item_defaults
                    merged = {**base, **item}
                if nulled or renamed:
                    merged = _upstream_change(merged, faults)
                rows.append(self.encode(merged, missing, nulls))
            slices.append(slice(start, len(rows)))
            not_found.append(absent)
        X = np.array(rows, dtype=np.float64)
        return Assembled(X, found, slices, not_found, missing, fired, nulls)


def _fires(settings: dict[str, Any] | None, rng: random.Random) -> bool:
    return settings is not None and rng.random() < settings.get("probability", 1.0)


def _upstream_change(merged: dict[str, Any], faults: ModelFaults) -> dict[str, Any]:
    """An upstream pipeline change: features arrive null, or under a new name."""
    merged = dict(merged)
    if faults.feature_null:
        for name in faults.feature_null["features"]:
            if name in merged:
                merged[name] = None
    if faults.feature_rename:
        for old, new in faults.feature_rename["renames"].items():
            if old in merged:
                merged[new] = merged.pop(old)
    return merged
