"""The feature store interface, and the store faults (they run here so a profiler that
maps modules to stages charges injected store latency to ``fetch``)."""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]
USER_TABLE = "users"
ITEM_TABLE = "items"


class StoreError(Exception):
    """The feature store is unreachable, unloaded, or failed a lookup."""


class FeatureStore(ABC):
    """Batch lookups of feature rows by integer id.

    Rows map feature name to value: float or None for numeric features, str or None for
    categoricals. Ids absent from the store are absent from the returned dict.
    """

    name: str = "abstract"

    @abstractmethod
    def fetch_users(self, ids: Sequence[int]) -> dict[int, Row]: ...

    @abstractmethod
    def fetch_items(self, ids: Sequence[int]) -> dict[int, Row]: ...

    @abstractmethod
    def check(self) -> dict[str, Any]:
        """Raise StoreError unless the store answers and holds the feature tables."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def inject_store_faults(latency: dict[str, Any] | None, errors: dict[str, Any] | None,
                        rng: random.Random) -> float:
    """Apply the store faults of one lookup; returns the injected delay in seconds.

    ``latency``: ``{"ms": float, "distribution": "fixed"|"uniform"|"exponential"|"lognormal",
    "ms_max": float, "sigma": float, "probability": float}``; ``errors``: ``{"rate": float}``.
    """
    if errors is not None and rng.random() < errors["rate"]:
        raise StoreError(f"injected feature store error (store_errors rate={errors['rate']})")
    if latency is None or rng.random() >= latency.get("probability", 1.0):
        return 0.0
    ms = float(latency["ms"])
    dist = latency.get("distribution", "fixed")
    if dist == "uniform":
        ms = rng.uniform(ms, float(latency["ms_max"]))
    elif dist == "exponential":
        ms = rng.expovariate(1.0 / ms)
    elif dist == "lognormal":
        # ms is the median; sigma the log-space spread, as latency tails usually look.
        ms = ms * rng.lognormvariate(0.0, float(latency.get("sigma", 0.5)))
    delay = ms / 1000.0
    time.sleep(delay)
    return delay


def open_store(kind: str, *, sqlite_path: Path, redis_url: str | None,
               user_columns: Sequence[str], item_columns: Sequence[str],
               categories: dict[str, tuple[str, ...]]) -> FeatureStore:
    """Open the store named by ``kind`` (``sqlite`` or ``redis``)."""
    if kind == "sqlite":
        from reference_service.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path, user_columns, item_columns)
    if kind == "redis":
        if not redis_url:
            raise ValueError("store 'redis' needs a redis URL (REFSVC_REDIS_URL / --redis-url)")
        from reference_service.store.redis import RedisStore

        return RedisStore(redis_url)
    raise ValueError(f"store must be 'sqlite' or 'redis' (got {kind!r})")
