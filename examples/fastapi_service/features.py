"""The feature schema, and where each online store keeps the features.

Shared by training, the loader, the service and the fault settings; no heavy imports, so
the launcher can check a configuration without loading numpy.
"""

from __future__ import annotations

ENTITY = "restaurant_id"
# Order matters: it is the column order of the model's input matrix (store, then request).
STORE_FEATURES: tuple[str, ...] = (
    "prep_minutes_p50_7d",
    "prep_minutes_p90_7d",
    "orders_last_hour",
    "couriers_nearby",
    "rating",
    "zone_congestion",
)
REQUEST_FEATURES: tuple[str, ...] = ("distance_km", "basket_items", "hour_of_day", "day_of_week")
MODEL_FEATURES: tuple[str, ...] = STORE_FEATURES + REQUEST_FEATURES

# Redis: one hash per restaurant, one field per feature (a null is an absent field), and a
# meta hash saying how many restaurants were loaded.
REDIS_KEY_PREFIX = "fastsvc:restaurant:"
REDIS_META_KEY = "fastsvc:meta"
# SQLite: one table keyed by restaurant_id; NULL is null.
SQLITE_TABLE = "restaurant_features"
