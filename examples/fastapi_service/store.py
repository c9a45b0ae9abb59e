"""The online feature store clients: Redis (``redis.asyncio``, the default) and SQLite.

The layout (features.py) is written by loader.py. Both return the features of a batch
as a float matrix (NaN = null) in one round trip. The SQLite client is synchronous, so
the healthy path runs it in a thread (``asyncio.to_thread``); the ``blocking_store`` fault
calls the sync clients on the event loop instead, the way it happens when someone reuses
a sync client in ``async def``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import redis
import redis.asyncio as aredis

from examples.fastapi_service.faults import FaultConfig
from examples.fastapi_service.features import REDIS_KEY_PREFIX as KEY_PREFIX
from examples.fastapi_service.features import REDIS_META_KEY as META_KEY
from examples.fastapi_service.features import SQLITE_TABLE as TABLE


class StoreUnavailable(RuntimeError):
    """The feature store cannot be reached or holds no features."""


@dataclass(frozen=True)
class Fetched:
    """Features of one batch: ``matrix[i]`` belongs to ``ids[i]``; NaN marks a null."""

    matrix: np.ndarray
    unknown: list[int]  # ids the store has no row for


class FeatureStore(Protocol):
    async def check(self) -> int: ...
    async def fetch(self, ids: list[int]) -> Fetched: ...
    async def close(self) -> None: ...


def to_matrix(ids: list[int], rows: list[Any], width: int) -> Fetched:
    """``rows[i]`` is a sequence of ``width`` values (str, number or None), or None when the
    store had nothing for ``ids[i]``."""
    matrix = np.full((len(ids), width), np.nan)
    unknown = []
    for i, row in enumerate(rows):
        if row is None or all(v is None for v in row):
            unknown.append(ids[i])
            continue
        matrix[i] = [np.nan if v is None else float(v) for v in row]
    return Fetched(matrix, unknown)


class RedisStore:
    def __init__(self, url: str, features: tuple[str, ...], faults: FaultConfig) -> None:
        self.features = features
        self.delay_s = faults.store_delay_ms / 1000.0
        self.blocking = faults.blocking_store
        # One pool per worker process; the client is created inside the worker's event
        # loop (lifespan), never inherited across a fork.
        self._client = aredis.Redis.from_url(url, decode_responses=True)
        self._sync = redis.Redis.from_url(url, decode_responses=True) if self.blocking else None

    async def check(self) -> int:
        try:
            meta = await self._client.hget(META_KEY, "entities")
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis feature store unreachable: {exc}") from None
        if meta is None:
            raise StoreUnavailable(f"Redis holds no {META_KEY}: load it first with "
                                   "python -m examples.fastapi_service.loader")
        return int(meta)

    async def fetch(self, ids: list[int]) -> Fetched:
        if self._sync is not None:
            # The fault: a blocking client on the event loop. The injected delay is then a
            # blocking sleep too, as a slow server would be to a sync client.
            if self.delay_s:
                time.sleep(self.delay_s)
            sync_pipe = self._sync.pipeline(transaction=False)
            for entity in ids:
                sync_pipe.hmget(f"{KEY_PREFIX}{entity}", self.features)
            return to_matrix(ids, sync_pipe.execute(), len(self.features))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        pipe = self._client.pipeline(transaction=False)
        for entity in ids:
            pipe.hmget(f"{KEY_PREFIX}{entity}", self.features)
        return to_matrix(ids, await pipe.execute(), len(self.features))

    async def close(self) -> None:
        await self._client.aclose()
        if self._sync is not None:
            self._sync.close()


class SqliteStore:
    def __init__(self, path: Path, features: tuple[str, ...], faults: FaultConfig) -> None:
        self.path = path
        self.features = features
        self.delay_s = faults.store_delay_ms / 1000.0
        self.blocking = faults.blocking_store
        # sqlite3 connections must stay on the thread that made them: one per thread of
        # the to_thread pool (and one for the event loop's thread under the fault).
        self._local = threading.local()
        self._select = (f"SELECT restaurant_id, {', '.join(features)} FROM {TABLE} "
                        "WHERE restaurant_id IN ({marks})")

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self._local.conn = conn
        return conn

    def fetch_sync(self, ids: list[int]) -> Fetched:
        unique = sorted(set(ids))
        sql = self._select.format(marks=", ".join("?" * len(unique)))
        by_id = {row[0]: row[1:] for row in self._connection().execute(sql, unique)}
        return to_matrix(ids, [by_id.get(i) for i in ids], len(self.features))

    async def check(self) -> int:
        if not self.path.is_file():
            raise StoreUnavailable(f"SQLite feature store {self.path} does not exist")
        try:
            (count,) = await asyncio.to_thread(
                lambda: self._connection().execute(f"SELECT count(*) FROM {TABLE}").fetchone())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite feature store {self.path}: {exc}") from None
        return int(count)

    async def fetch(self, ids: list[int]) -> Fetched:
        if self.blocking:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.fetch_sync(ids)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await asyncio.to_thread(self.fetch_sync, ids)

    async def close(self) -> None:
        # Connections of pool threads close when their threads end with the process.
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def open_store(kind: str, features: tuple[str, ...], faults: FaultConfig, *,
               redis_url: str, sqlite_path: Path | None) -> FeatureStore:
    if kind == "redis":
        return RedisStore(redis_url, features, faults)
    if sqlite_path is None:
        raise StoreUnavailable("the sqlite store needs a path (FASTSVC_SQLITE_PATH)")
    return SqliteStore(sqlite_path, features, faults)
