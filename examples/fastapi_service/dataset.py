"""The synthetic delivery-ETA world: restaurants (the feature store's entities), orders (the
requests) and the minutes each delivery took (the target).

Everything is drawn from one ``numpy`` generator with a fixed seed, so a given (seed, size)
gives the same restaurants, the same training set and the same models on any machine.
The target is non-linear on purpose (rush hours, congestion times distance, courier
shortage) so that a deeper model is really better and not just slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# New restaurants have no rating yet: a few nulls are normal and the model learned them.
RATING_NULL_RATE = 0.04
RUSH_HOURS = frozenset({11, 12, 13, 18, 19, 20, 21})


@dataclass(frozen=True)
class Restaurants:
    """Entity features, one row per restaurant; ``ids[i]`` owns ``features[i]``."""

    ids: np.ndarray  # int64, 1..n
    features: np.ndarray  # float64 (n, 6): features.STORE_FEATURES in order; NaN = null
    popularity: np.ndarray  # float64, sums to 1: how often each restaurant is ordered from


def zipf_popularity(n: int, exponent: float = 1.1) -> np.ndarray:
    """Zipf-like weights over ranks 1..n (a few restaurants get most orders)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def make_restaurants(n: int, rng: np.random.Generator) -> Restaurants:
    popularity = zipf_popularity(n)
    # Popular places get more orders per hour; shuffle so id order says nothing.
    rng.shuffle(popularity)
    p50 = np.clip(rng.lognormal(np.log(12.0), 0.35, n), 4.0, 45.0)
    p90 = p50 * rng.uniform(1.25, 2.1, n)
    orders = rng.poisson(2.0 + np.minimum(60.0, 4.0 * popularity * n)).astype(np.float64)
    couriers = rng.poisson(3.0, n).astype(np.float64)
    rating = np.round(rng.uniform(3.0, 5.0, n), 1)
    rating[rng.random(n) < RATING_NULL_RATE] = np.nan
    congestion = rng.beta(2.0, 5.0, n)
    features = np.column_stack([p50, p90, orders, couriers, rating, congestion])
    return Restaurants(np.arange(1, n + 1, dtype=np.int64), features, popularity)


def make_requests(n: int, rng: np.random.Generator) -> np.ndarray:
    """Request-side features (features.REQUEST_FEATURES), shape (n, 4)."""
    distance = np.clip(rng.gamma(2.0, 1.6, n), 0.2, 20.0)
    basket = 1.0 + rng.poisson(2.0, n)
    hour = rng.integers(0, 24, n).astype(np.float64)
    dow = rng.integers(0, 7, n).astype(np.float64)
    return np.column_stack([distance, basket, hour, dow])


def delivery_minutes(store: np.ndarray, request: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
    """The 'true' minutes from order to door for each (store row, request row)."""
    p50, p90, orders, couriers, rating, congestion = store.T
    distance, basket, hour, dow = request.T
    busy = orders > 10
    rush = np.isin(hour, list(RUSH_HOURS))
    weekend = dow >= 5
    prep = p50 * (1.0 + 0.015 * np.minimum(orders, 40.0)) + np.where(busy, 0.5 * (p90 - p50), 0)
    speed_min_per_km = (2.4 + 5.0 * congestion) * np.where(rush, 1.35, 1.0) * np.where(
        weekend, 0.92, 1.0)
    courier_wait = 7.0 * np.exp(-couriers)
    unknown_place = np.where(np.isnan(rating), 2.5, 0.0)
    noise = rng.normal(0.0, 2.0, len(distance))
    return prep + distance * speed_min_per_km + courier_wait + 0.4 * basket + unknown_place + noise


def make_training_set(restaurants: Restaurants, n_orders: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) for ``n_orders`` orders; restaurants drawn by popularity, like real traffic."""
    rows = rng.choice(len(restaurants.ids), size=n_orders, p=restaurants.popularity)
    store = restaurants.features[rows]
    request = make_requests(n_orders, rng)
    y = delivery_minutes(store, request, rng)
    return np.hstack([store, request]), y
