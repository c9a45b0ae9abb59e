"""The delivery-ETA service: ``uvicorn examples.fastapi_service.app:app --workers N``.

POST /predict   {"instances": [{"restaurant_id": 17, "distance_km": 3.2, ...}, ...],
                 "model_version": "v2"}   -> {"model", "model_version", "predictions": [...]}
GET  /v1/models   the served model, its versions and the default
GET  /healthz     liveness
GET  /metrics     Prometheus (metrics.py)

Per request: features for every restaurant from the store (one round trip), the request's
own features appended, one ``predict`` call for the batch, the response encoded. Settings
and faults come from environment variables (settings.py, faults.py), read at import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import numpy as np
import redis
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from opentelemetry import trace

from examples.fastapi_service import faults as faults_mod
from examples.fastapi_service import metrics, model
from examples.fastapi_service import settings as settings_mod
from examples.fastapi_service.schemas import (
    ModelInfo,
    ModelsResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
)
from examples.fastapi_service.store import FeatureStore, StoreUnavailable, open_store

log = logging.getLogger("fastsvc")
try:
    SETTINGS = settings_mod.from_env()
    FAULTS = faults_mod.from_env()
except (settings_mod.SettingsError, faults_mod.FaultConfigError) as exc:
    # One line, no traceback: uvicorn imports this module in each worker.
    raise SystemExit(f"fastsvc: {exc}") from None

# A no-op until telemetry.start() installs a provider; users write spans like this anyway.
tracer = trace.get_tracer("examples.fastapi_service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs in each worker process after it started: what owns threads, sockets or file
    # handles (exporter, Redis pool, SQLite connections) is made here, not at import.
    provider = None
    if SETTINGS.otel:
        from examples.fastapi_service import telemetry

        provider = telemetry.start()
    models = await asyncio.to_thread(model.load, SETTINGS.artifacts, FAULTS.default_version)
    store = open_store(SETTINGS.store, models.store_features, FAULTS,
                       redis_url=SETTINGS.redis_url, sqlite_path=SETTINGS.sqlite_path)
    entities = await store.check()
    app.state.models = models
    app.state.store = store
    app.state.padding = (np.random.default_rng(0).normal(size=FAULTS.response_pad_floats)
                         .round(6).tolist() if FAULTS.response_pad_floats else None)
    # Warning level: uvicorn's default for this launcher, and a start is worth a line.
    log.warning("fastsvc worker ready: pid %d, %s %s (default %s), %s store with %d "
                "restaurants, OpenTelemetry %s%s", os.getpid(), models.name,
                "/".join(models.versions), models.default_version, SETTINGS.store, entities,
                "on" if provider else "off",
                f"; FAULTS: {', '.join(FAULTS.active())}" if FAULTS.active() else "")
    try:
        yield
    finally:
        await store.close()
        if provider is not None:
            telemetry.stop(provider)  # flushes the spans still queued


app = FastAPI(title="delivery-eta", version="1.0", lifespan=lifespan)
if SETTINGS.otel:
    # Imported only when on: the instrumentation packages cost ~0.1 s per worker start.
    from examples.fastapi_service import telemetry

    telemetry.instrument(app)


@app.middleware("http")
async def record_metrics(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    start = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        # The route template, not the raw path: unknown paths must not add label values.
        route = request.scope.get("route")
        label = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(request.method, label, str(status)).inc()
        metrics.REQUEST_LATENCY.labels(request.method, label).observe(
            time.perf_counter() - start)


@app.exception_handler(StoreUnavailable)
@app.exception_handler(redis.RedisError)
@app.exception_handler(sqlite3.Error)
async def store_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("feature store error: %s", exc)
    return JSONResponse({"detail": "feature store unavailable"}, status_code=503)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/models", response_model=ModelsResponse)
async def list_models(request: Request) -> ModelsResponse:
    models: model.ModelSet = request.app.state.models
    return ModelsResponse(models=[ModelInfo(name=models.name, versions=models.versions,
                                            default_version=models.default_version)])


@app.get("/metrics")
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


def _request_matrix(body: PredictRequest, names: tuple[str, ...]) -> np.ndarray:
    return np.array([[np.nan if (v := getattr(inst, n)) is None else float(v) for n in names]
                     for inst in body.instances], dtype=np.float64)


def _count_nulls(models: model.ModelSet, x: np.ndarray) -> None:
    metrics.FEATURE_ROWS.labels(models.name).inc(len(x))
    nulls = np.isnan(x).sum(axis=0)
    for name, count in zip(models.store_features + models.request_features, nulls.tolist(),
                           strict=True):
        if count:
            metrics.NULL_FEATURES.labels(models.name, name).inc(count)


@app.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, request: Request) -> Response:
    models: model.ModelSet = request.app.state.models
    store: FeatureStore = request.app.state.store
    if len(body.instances) > SETTINGS.max_instances:
        raise HTTPException(413, f"at most {SETTINGS.max_instances} instances per request "
                                 f"(got {len(body.instances)})")
    version = body.model_version or models.default_version
    if version not in models.models:
        raise HTTPException(404, f"unknown model_version {version!r} "
                                 f"(served: {', '.join(models.versions)})")
    if FAULTS.blocking_ms:
        # The fault: a synchronous call (think requests.get to a pricing API) in async def.
        time.sleep(FAULTS.blocking_ms / 1000.0)

    ids = [inst.restaurant_id for inst in body.instances]
    with tracer.start_as_current_span("fetch_features") as span:
        span.set_attribute("feature_store.kind", SETTINGS.store)
        span.set_attribute("feature_store.entities", len(ids))
        fetched = await store.fetch(ids)
    if fetched.unknown:
        shown = ", ".join(map(str, fetched.unknown[:5]))
        raise HTTPException(404, f"unknown restaurant_id: {shown}"
                                 + (" ..." if len(fetched.unknown) > 5 else ""))
    x = np.hstack([fetched.matrix, _request_matrix(body, models.request_features)])
    _count_nulls(models, x)

    with tracer.start_as_current_span("predict") as span:
        span.set_attribute("model.name", models.name)
        span.set_attribute("model.version", version)
        span.set_attribute("model.batch_size", len(x))
        minutes = models.predict(version, x)
    metrics.PREDICTIONS.labels(models.name, version).inc(len(x))

    with tracer.start_as_current_span("serialize"):
        response = PredictResponse(
            model=models.name, model_version=version,
            predictions=[Prediction(restaurant_id=i, eta_minutes=round(m, 2))
                         for i, m in zip(ids, minutes.tolist(), strict=True)],
            debug_contributions=request.app.state.padding)
        if FAULTS.python_encoder:
            # The fault: FastAPI's pure-python encoder walks every value of the payload.
            payload = json.dumps(jsonable_encoder(response, exclude_none=True)).encode()
        else:
            payload = response.model_dump_json(exclude_none=True).encode()
    return Response(payload, media_type="application/json")
