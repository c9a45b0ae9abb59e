"""Feature schema of the reference platform: one source of truth for training and serving.

Features come from three places: ``store`` (per-user row in the online feature store),
``item`` (per-item row, used by the ranking model) and ``request`` (sent by the caller with
each prediction). Training writes this schema, with per-feature defaults and ranges learnt
from the data, into ``manifest.json``; the service reads it back from there, so a served
model always uses the schema it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "NG", "JP")
PLANS = ("free", "basic", "pro", "enterprise")
CHANNELS = ("web", "ios", "android")
MERCHANT_CATEGORIES = (
    "grocery", "electronics", "travel", "fashion", "gaming", "fuel", "restaurants", "crypto",
)
ITEM_CATEGORIES = (
    "news", "sports", "music", "movies", "tech", "food", "travel", "fashion", "games", "kids",
)


@dataclass(frozen=True)
class FeatureSpec:
    """One model input. ``categories`` is set for categorical features only.

    ``nullable``: whether a request may send ``null`` for it (missing value, which every
    model handles). ``required``: whether a request must send it (request features only).
    """

    name: str
    kind: str  # "numeric" | "categorical"
    source: str  # "store" | "item" | "request"
    categories: tuple[str, ...] | None = None
    nullable: bool = True
    required: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind,
            "source": self.source,
            "nullable": self.nullable,
            "required": self.required,
        }
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out


def _num(name: str, source: str = "store", **kw: bool) -> FeatureSpec:
    return FeatureSpec(name, "numeric", source, **kw)


def _cat(name: str, cats: tuple[str, ...], source: str = "store", **kw: bool) -> FeatureSpec:
    return FeatureSpec(name, "categorical", source, cats, **kw)


USER_FEATURES: tuple[FeatureSpec, ...] = (
    _num("account_age_days"),
    _num("txn_count_30d"),
    _num("avg_amount_30d"),
    _num("num_devices"),
    _num("days_since_login"),
    _num("sessions_7d"),
    _num("support_tickets_90d"),
    _num("credit_score"),
    _cat("country", COUNTRIES),
    _cat("plan", PLANS),
    _cat("channel", CHANNELS),
    _cat("fav_category", ITEM_CATEGORIES),
)

ITEM_FEATURES: tuple[FeatureSpec, ...] = (
    _num("price", "item"),
    _num("popularity", "item"),
    _num("item_age_days", "item"),
    _cat("category", ITEM_CATEGORIES, "item"),
)

REQUEST_FEATURES: tuple[FeatureSpec, ...] = (
    _num("amount", "request", nullable=False, required=True),
    _num("hour", "request", nullable=False),
    _cat("merchant_category", MERCHANT_CATEGORIES, "request", nullable=False),
)

ALL_FEATURES: dict[str, FeatureSpec] = {
    f.name: f for f in USER_FEATURES + ITEM_FEATURES + REQUEST_FEATURES
}

# Column order of each model's input matrix (per model; a version may add columns, see
# ``VERSION_EXTRA_FEATURES``). Categoricals enter as integer codes (the index
# in ``categories``; NaN when missing), so predict paths never need a DataFrame.
MODEL_FEATURES: dict[str, tuple[str, ...]] = {
    "fraud": (
        "amount", "hour", "merchant_category", "account_age_days", "txn_count_30d",
        "avg_amount_30d", "num_devices", "credit_score", "country", "channel",
    ),
    "churn": (
        "account_age_days", "days_since_login", "sessions_7d", "support_tickets_90d",
        "txn_count_30d", "credit_score", "plan", "country", "channel",
    ),
    "ranking": (
        "sessions_7d", "account_age_days", "plan", "country", "fav_category",
        "price", "popularity", "item_age_days", "category",
    ),
}

# fraud v2 also reads login activity, which is what lets it catch account takeovers.
VERSION_EXTRA_FEATURES: dict[tuple[str, str], tuple[str, ...]] = {
    ("fraud", "v2"): ("days_since_login", "sessions_7d"),
}


def model_features(model: str, version: str) -> tuple[str, ...]:
    """Input columns, in order, of one model version."""
    return MODEL_FEATURES[model] + VERSION_EXTRA_FEATURES.get((model, version), ())


# Ranking requests carry item ids; these bound a request's candidate list.
MAX_RANKING_ITEMS = 200
