"""SQLite feature store: the embedded default, one read-only connection per worker thread."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reference_service.store.base import ITEM_TABLE, USER_TABLE, FeatureStore, Row, StoreError


class SQLiteStore(FeatureStore):
    """Indexed primary-key lookups; a batch is one ``IN (...)`` query."""

    name = "sqlite"

    def __init__(self, path: Path, user_columns: Sequence[str], item_columns: Sequence[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"SQLite feature store file not found: {self.path}")
        self.user_columns = tuple(user_columns)
        self.item_columns = tuple(item_columns)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        # Connections must not cross a fork (gunicorn forks workers after the app may
        # have been created) nor threads (gthread workers): key them by pid per thread.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            try:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                       check_same_thread=True, cached_statements=256)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _fetch(self, table: str, key: str, cols: tuple[str, ...],
               ids: Sequence[int]) -> dict[int, Row]:
        if not ids:
            return {}
        unique = list(dict.fromkeys(ids))
        sql = (f"SELECT {key}, {', '.join(cols)} FROM {table} "
               f"WHERE {key} IN ({', '.join('?' * len(unique))})")
        try:
            rows = self._conn().execute(sql, unique).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite lookup in {table} failed: {exc}") from exc
        return {r[0]: dict(zip(cols, r[1:], strict=True)) for r in rows}

    def fetch_users(self, ids: Sequence[int]) -> dict[int, Row]:
        return self._fetch(USER_TABLE, "entity_id", self.user_columns, ids)

    def fetch_items(self, ids: Sequence[int]) -> dict[int, Row]:
        return self._fetch(ITEM_TABLE, "item_id", self.item_columns, ids)

    def check(self) -> dict[str, Any]:
        try:
            conn = self._conn()
            users = conn.execute(f"SELECT max(entity_id) FROM {USER_TABLE}").fetchone()[0]
            items = conn.execute(f"SELECT max(item_id) FROM {ITEM_TABLE}").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path} is not usable: {exc}") from exc
        return {"store": "sqlite", "path": str(self.path), "max_entity_id": users,
                "max_item_id": items}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _sql_value(v: float, categories: tuple[str, ...] | None) -> object:
    if np.isnan(v):
        return None
    return categories[int(v)] if categories is not None else float(v)


def build_sqlite(path: Path, users: dict[str, np.ndarray], items: dict[str, np.ndarray],
                 categories: dict[str, tuple[str, ...]]) -> None:
    """Write the users and items tables (ids 0..n-1) into a fresh SQLite file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        for table, key, data in ((USER_TABLE, "entity_id", users), (ITEM_TABLE, "item_id", items)):
            cols = list(data)
            decl = ", ".join(f"{c} {'TEXT' if c in categories else 'REAL'}" for c in cols)
            conn.execute(f"CREATE TABLE {table} ({key} INTEGER PRIMARY KEY, {decl})")
            n = len(next(iter(data.values())))
            rows = (
                (i, *(_sql_value(data[c][i], categories.get(c)) for c in cols)) for i in range(n)
            )
            conn.executemany(
                f"INSERT INTO {table} VALUES ({', '.join('?' * (len(cols) + 1))})", rows
            )
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, path)


def read_table(path: Path, table: str) -> tuple[list[str], list[tuple]]:
    """All rows of ``table`` (used to load the Redis store from the SQLite file)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cur = conn.execute(f"SELECT * FROM {table} ORDER BY 1")
        cols = [d[0] for d in cur.description]
        return cols, cur.fetchall()
    finally:
        conn.close()
