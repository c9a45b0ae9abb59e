"""Redis feature store: one JSON document per entity, a batch is one MGET round trip.

Keys: ``refsvc:u:<entity_id>`` and ``refsvc:i:<item_id>`` hold the row as JSON (the same
names and values as the SQLite tables); ``refsvc:meta`` holds the load's provenance.
``reference_service.redis_server.load_features`` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis as redis_lib

from reference_service.store.base import FeatureStore, Row, StoreError

USER_PREFIX = "refsvc:u:"
ITEM_PREFIX = "refsvc:i:"
META_KEY = "refsvc:meta"


class RedisStore(FeatureStore):
    name = "redis"

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url = url
        # redis-py's pool re-creates its connections after a fork, so one client per
        # process object is safe under gunicorn's pre-fork model.
        self._client = redis_lib.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def _mget(self, prefix: str, ids: Sequence[int]) -> dict[int, Row]:
        if not ids:
            return {}
        unique = list(dict.fromkeys(ids))
        try:
            values = self._client.mget([f"{prefix}{i}" for i in unique])
        except redis_lib.RedisError as exc:
            raise StoreError(f"Redis lookup failed at {self.url}: {exc}") from exc
        return {i: json.loads(v) for i, v in zip(unique, values, strict=True) if v is not None}

    def fetch_users(self, ids: Sequence[int]) -> dict[int, Row]:
        return self._mget(USER_PREFIX, ids)

    def fetch_items(self, ids: Sequence[int]) -> dict[int, Row]:
        return self._mget(ITEM_PREFIX, ids)

    def check(self) -> dict[str, Any]:
        try:
            meta = self._client.get(META_KEY)
        except redis_lib.RedisError as exc:
            raise StoreError(f"Redis at {self.url} is not reachable: {exc}") from exc
        if meta is None:
            raise StoreError(
                f"Redis at {self.url} holds no feature table ({META_KEY} missing); load it with "
                "`python -m reference_service.redis_server --url URL --load-only`"
            )
        return {"store": "redis", "url": self.url, **json.loads(meta)}

    def close(self) -> None:
        self._client.close()
