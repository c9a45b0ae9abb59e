"""Online feature store backends (SQLite default, Redis); all share ``base.FeatureStore``."""

from __future__ import annotations

from reference_service.store.base import FeatureStore, StoreError, open_store

__all__ = ["FeatureStore", "StoreError", "open_store"]
