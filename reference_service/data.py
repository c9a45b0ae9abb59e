"""Deterministic synthetic data with real structure for the reference models.

Users have correlated numeric features (one latent "engagement" and one latent "risk"
factor drive several columns), categorical features whose frequencies are skewed, and a
few percent of nulls. Labels are rare (fraud ~3 %, churn ~15 %, click ~8 %) and depend on
non-linear interactions, so a larger model (fraud v2) is measurably better than a small one.
"""

from __future__ import annotations

import numpy as np

from reference_service.schema import (
    CHANNELS,
    COUNTRIES,
    ITEM_CATEGORIES,
    MERCHANT_CATEGORIES,
    PLANS,
)

NULL_RATE = 0.02


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _with_nulls(rng: np.random.Generator, col: np.ndarray) -> np.ndarray:
    col = col.astype(float)
    col[rng.random(col.shape[0]) < NULL_RATE] = np.nan
    return col


def make_users(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-user store features. Categoricals are integer codes (float, NaN = null)."""
    engagement = rng.normal(size=n)
    risk = 0.4 * -engagement + rng.normal(size=n) * 0.9
    country = rng.choice(len(COUNTRIES), size=n, p=[.35, .12, .1, .08, .1, .12, .05, .08])
    plan = rng.choice(len(PLANS), size=n, p=[.5, .25, .18, .07])
    channel = rng.choice(len(CHANNELS), size=n, p=[.4, .3, .3])
    fav = rng.choice(len(ITEM_CATEGORIES), size=n)
    cols = {
        "account_age_days": np.round(np.exp(5.5 + 0.6 * engagement + rng.normal(size=n) * .5)),
        "txn_count_30d": rng.poisson(np.exp(1.5 + 0.5 * engagement)).astype(float),
        "avg_amount_30d": np.round(np.exp(3.5 + 0.3 * plan + rng.normal(size=n) * .6), 2),
        "num_devices": 1.0 + rng.poisson(np.exp(0.2 * risk)),
        "days_since_login": np.round(np.exp(1.5 - 0.8 * engagement + rng.normal(size=n) * .5)),
        "sessions_7d": rng.poisson(np.exp(1.8 + 0.7 * engagement)).astype(float),
        "support_tickets_90d": rng.poisson(np.exp(-1.0 + 0.5 * risk)).astype(float),
        "credit_score": np.clip(np.round(680 - 45 * risk + rng.normal(size=n) * 40), 300, 850),
        "country": country.astype(float),
        "plan": plan.astype(float),
        "channel": channel.astype(float),
        "fav_category": fav.astype(float),
    }
    return {k: _with_nulls(rng, v) for k, v in cols.items()}


def make_items(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    category = rng.choice(len(ITEM_CATEGORIES), size=n)
    return {
        "price": np.round(np.exp(2.5 + 0.2 * category + rng.normal(size=n) * .7), 2),
        "popularity": np.round(rng.beta(1.2, 6.0, size=n), 4),
        "item_age_days": np.round(rng.exponential(90.0, size=n)),
        "category": category.astype(float),
    }


def _nan0(x: np.ndarray, fill: float) -> np.ndarray:
    return np.where(np.isnan(x), fill, x)


def make_transactions(
    users: dict[str, np.ndarray], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Transactions of random users: (user index, request features, fraud label)."""
    uid = rng.integers(0, len(users["credit_score"]), size=n)
    u = {k: v[uid] for k, v in users.items()}
    mcat = rng.choice(len(MERCHANT_CATEGORIES), size=n, p=[.25, .12, .1, .15, .1, .12, .13, .03])
    hour = rng.integers(0, 24, size=n).astype(float)
    base = _nan0(u["avg_amount_30d"], 50.0)
    amount = np.round(base * np.exp(rng.normal(size=n) * 0.8 + 0.6 * (mcat == 1) + (mcat == 2)), 2)
    night = (hour < 5) | (hour > 22)
    ratio = np.log1p(amount) - np.log1p(base)
    young = _nan0(u["account_age_days"], 250.0) < 90
    logit = (
        -4.4
        + 1.1 * np.tanh(ratio)
        + 0.9 * night * (ratio > 0.5)
        + 1.4 * (mcat == 7)
        + 0.8 * young * (mcat == 1)
        + 0.35 * (_nan0(u["num_devices"], 1.0) - 1.0)
        - 0.006 * (_nan0(u["credit_score"], 680.0) - 680.0)
        + 0.7 * np.isin(u["country"], [5.0, 6.0]) * (u["channel"] == 0.0)
        + 0.5 * np.sin(hour / 24 * 2 * np.pi) * (mcat == 3)
        - 0.03 * np.minimum(_nan0(u["txn_count_30d"], 4.0), 15)
        # account takeover: a dormant account suddenly spending above its habit
        + 1.6 * (_nan0(u["days_since_login"], 4.0) > 12) * (ratio > 0.3)
        - 0.08 * np.minimum(_nan0(u["sessions_7d"], 6.0), 20)
    )
    y = (rng.random(n) < _sigmoid(logit)).astype(np.int64)
    req = {"amount": amount, "hour": hour, "merchant_category": mcat.astype(float)}
    return uid, req, y


def churn_labels(users: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    logit = (
        -2.3
        + 0.06 * np.minimum(_nan0(users["days_since_login"], 5.0), 40)
        - 0.12 * _nan0(users["sessions_7d"], 6.0)
        + 0.45 * _nan0(users["support_tickets_90d"], 0.0)
        - 0.5 * (users["plan"] >= 2.0)
        - 0.0015 * (_nan0(users["account_age_days"], 250.0) - 250.0)
        + 0.3 * (users["channel"] == 0.0)
    )
    return (rng.random(logit.shape[0]) < _sigmoid(logit)).astype(np.int64)


def make_impressions(
    users: dict[str, np.ndarray], items: dict[str, np.ndarray], n: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user index, item index, clicked) pairs for the ranking model."""
    uid = rng.integers(0, len(users["plan"]), size=n)
    iid = rng.integers(0, len(items["price"]), size=n)
    match = users["fav_category"][uid] == items["category"][iid]
    logit = (
        -3.2
        + 1.6 * match
        + 4.0 * items["popularity"][iid]
        - 0.004 * items["item_age_days"][iid]
        + 0.04 * np.minimum(_nan0(users["sessions_7d"][uid], 6.0), 30)
        - 0.25 * np.log1p(items["price"][iid]) * (users["plan"][uid] == 0.0)
    )
    y = (rng.random(n) < _sigmoid(logit)).astype(np.int64)
    return uid, iid, y
