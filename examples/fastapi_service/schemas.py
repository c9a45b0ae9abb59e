"""Request and response bodies of the API (pydantic v2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Hard ceiling of the schema; the configured limit (FASTSVC_MAX_INSTANCES) is checked in
# the handler so it can change without a code change.
MAX_BATCH = 10_000


class Instance(BaseModel):
    """One delivery to estimate. Request-side features are optional: a missing one is
    passed to the model as missing (the model learned to cope), and counted as null."""

    restaurant_id: int = Field(ge=1, description="entity key in the feature store")
    distance_km: float | None = Field(default=None, ge=0, le=200)
    basket_items: int | None = Field(default=None, ge=1, le=500)
    hour_of_day: int | None = Field(default=None, ge=0, le=23)
    day_of_week: int | None = Field(default=None, ge=0, le=6, description="0 = Monday")


class PredictRequest(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    instances: list[Instance] = Field(min_length=1, max_length=MAX_BATCH)
    model_version: str | None = Field(default=None, description="default: the served default")


class Prediction(BaseModel):
    restaurant_id: int
    eta_minutes: float


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    model_version: str
    predictions: list[Prediction]
    # Only with the slow-serialization fault: per-feature contributions left switched on.
    debug_contributions: list[float] | None = None


class ModelInfo(BaseModel):
    name: str
    versions: list[str]
    default_version: str


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
