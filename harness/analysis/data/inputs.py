"""Inputs of the data checks: the training reference and the feature values of the traffic.

The reference is ``reference_stats.json`` (format: reference_service/reference_stats.py)
plus, when present, ``manifest.json`` beside it (feature ranges, categories, sources).

The traffic is a replay file or directory (``RUN/traffic`` from ``harness run
--record-traffic``, or ``harness record`` output). Each predict request's instances give
the **request-sent** features; with ``store`` (the artifacts' SQLite file) the store
features of each ``entity_id`` (and item features of each ``item_ids`` entry) are joined
in, request values taking precedence as the service merges them. Faults injected *inside*
the service (a nulled or renamed feature) are not visible here: they show in the
service's metrics (``refsvc_missing_features_total``) and in the prediction shift.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.rundir.replay import Replay, read_replay

__all__ = ["ABSENT", "Reference", "TrafficSample", "default_artifacts_dir", "load_reference",
           "traffic_sample", "join_store"]

_PREDICT = re.compile(r"^/v1/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/predict$")
_SQLITE_VARS = 900  # below SQLite's default host-parameter limit on old builds
#: a feature a row does not carry (not sent, entity not in the store); None is an explicit null
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


@dataclass(frozen=True)
class Reference:
    """Training distributions (``features``, ``models``) and the manifest's feature schema."""

    features: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: Path | None = None
    source: str = ""


def default_artifacts_dir() -> Path:
    """``$REFSVC_ARTIFACTS``, else the ``artifacts/`` beside the harness package."""
    env = os.environ.get("REFSVC_ARTIFACTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "artifacts"


def load_reference(path: str | Path | None = None) -> Reference:
    """Read ``reference_stats.json`` (a file, or a directory holding it and the manifest)."""
    p = Path(path) if path is not None else default_artifacts_dir()
    stats_path = p / "reference_stats.json" if p.is_dir() else p
    try:
        doc = json.loads(stats_path.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"reference statistics not found at {str(stats_path)!r} "
                         "(build them with python -m reference_service.train)") from exc
    except ValueError as exc:
        raise ValueError(f"{str(stats_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema_version") != 1 \
            or not isinstance(doc.get("features"), dict):
        raise ValueError(f"{str(stats_path)!r} must be reference_stats schema_version 1 with "
                         f"'features' (got keys {sorted(doc) if isinstance(doc, dict) else doc!r})")
    schema: dict[str, dict[str, Any]] = {}
    store: Path | None = None
    manifest = stats_path.parent / "manifest.json"
    if manifest.is_file():
        man = json.loads(manifest.read_text())
        schema = dict(man.get("features", {}))
        name = man.get("store", {}).get("sqlite")
        if name and (stats_path.parent / name).is_file():
            store = stats_path.parent / name
    return Reference(doc["features"], dict(doc.get("models", {})), schema, store,
                     str(stats_path))


@dataclass
class TrafficSample:
    """Feature values seen in the traffic, one list entry per model input row.

    ``values[feature]`` holds raw JSON values per row (None = sent as null or null in the
    store, ``ABSENT`` = the row does not carry it); ``requests[model]`` counts predict
    requests per model; ``versions`` the explicit versions asked for; ``skipped`` requests
    whose body was not usable.
    """

    values: dict[str, list[Any]] = field(default_factory=dict)
    rows: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    versions: dict[str, dict[str, int]] = field(default_factory=dict)
    entity_ids: list[int | None] = field(default_factory=list)
    #: the model each instance row was sent to (aligned with ``entity_ids``)
    models: list[str] = field(default_factory=list)
    item_ids: list[list[int]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    joined: bool = False
    not_found: int = 0
    source: str = ""


def _skip(sample: TrafficSample, why: str) -> None:
    sample.skipped[why] = sample.skipped.get(why, 0) + 1


def traffic_sample(replay: Replay | str | Path) -> TrafficSample:
    """Request-sent features of every predict request in a replay (file, directory or object)."""
    rep = replay if isinstance(replay, Replay) else read_replay(replay)
    sample = TrafficSample(source=rep.header.source)
    for rec in rep.records:
        m = _PREDICT.match(rec.path.split("?", 1)[0])
        if rec.method != "POST" or m is None:
            continue
        if rec.body is None:
            _skip(sample, "body not recorded")
            continue
        try:
            body = json.loads(rec.body)
        except ValueError:
            _skip(sample, "body is not JSON")
            continue
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list):
            _skip(sample, "no instances list")
            continue
        model = m.group("model")
        sample.requests[model] = sample.requests.get(model, 0) + 1
        version = m.group("version") or body.get("version") or "default"
        per = sample.versions.setdefault(model, {})
        per[str(version)] = per.get(str(version), 0) + 1
        for inst in instances:
            if not isinstance(inst, dict):
                _skip(sample, "instance is not an object")
                continue
            raw = inst.get("features")
            feats: dict[str, Any] = raw if isinstance(raw, dict) else {}
            eid = inst.get("entity_id")
            items = inst.get("item_ids")
            sample.entity_ids.append(eid if isinstance(eid, int) else None)
            sample.models.append(model)
            sample.item_ids.append([i for i in items if isinstance(i, int)]
                                   if isinstance(items, list) else [])
            sample.sent.append(dict(feats))
    _rebuild(sample, {}, {})
    return sample


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name, ABSENT) for row in rows] for name in names}


def _rebuild(sample: TrafficSample, users: Mapping[int, dict[str, Any]],
             items: Mapping[int, dict[str, Any]]) -> None:
    # Request features: one value per instance. Store features: one row per *distinct*
    # entity (item): the store's values are fixed, traffic only picks which entities, and
    # counting a hot entity once per request would call any Zipf-shaped traffic drifted.
    inst_rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    not_found = 0
    seen_users: set[int] = set()
    seen_items: set[int] = set()
    for eid, item_ids, sent in zip(sample.entity_ids, sample.item_ids, sample.sent,
                                   strict=True):
        row: dict[str, Any] = {}
        if sample.joined and eid is not None and eid not in seen_users:
            seen_users.add(eid)
            if eid in users:
                row.update(users[eid])
            else:
                not_found += 1
        row.update(sent)
        inst_rows.append(row)
        if sample.joined:
            fresh = [i for i in item_ids if i in items and i not in seen_items]
            seen_items.update(fresh)
            item_rows += [items[i] for i in fresh]
    values = _columns(inst_rows)
    for name, col in _columns(item_rows).items():
        values.setdefault(name, []).extend(col)
    sample.values, sample.rows, sample.not_found = values, len(inst_rows), not_found


def _fetch(conn: sqlite3.Connection, table: str, key: str, ids: list[int]
           ) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), _SQLITE_VARS):
        chunk = ids[i:i + _SQLITE_VARS]
        cur = conn.execute(f"SELECT * FROM {table} WHERE {key} IN "  # noqa: S608 - fixed names
                           f"({','.join('?' * len(chunk))})", chunk)
        cols = [d[0] for d in cur.description]
        for row in cur:
            rec = dict(zip(cols, row, strict=True))
            out[int(rec.pop(key))] = rec
    return out


def join_store(sample: TrafficSample, store: str | Path) -> TrafficSample:
    """Join the store features (SQLite ``users``/``items``) of the sample's entity ids, in place."""
    path = Path(store)
    if not path.is_file():
        raise ValueError(f"feature store not found at {str(path)!r}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        users = _fetch(conn, "users", "entity_id",
                       sorted({e for e in sample.entity_ids if e is not None}))
        items = _fetch(conn, "items", "item_id",
                       sorted({i for ids in sample.item_ids for i in ids}))
    except sqlite3.Error as exc:
        raise ValueError(f"feature store {str(path)!r} has no users/items tables: {exc}") \
            from exc
    finally:
        conn.close()
    sample.joined = True
    _rebuild(sample, users, items)
    return sample
