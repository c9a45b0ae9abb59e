"""The Flask application: routes, stage timing, errors as JSON.

``create_app(config=None)`` loads and verifies the artifacts, opens the feature store
(lazily per worker) and returns the WSGI app; gunicorn runs ``reference_service.app:
create_app()``. Every prediction response carries
``Server-Timing: fetch;dur=…, infer;dur=…, serialize;dur=…, app;dur=…`` (ms, µs resolution;
``app`` is the whole handler, so the stages sum to no more than it).
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from typing import Any

import numpy as np
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from reference_service import metrics as metrics_mod
from reference_service import tracing
from reference_service.artifacts import load_manifest
from reference_service.config import ServiceConfig
from reference_service.faults import FaultState, load_file, new_state_file, write_state
from reference_service.features import FeatureAssembler
from reference_service.inference import infer, load_models
from reference_service.openapi import openapi_document
from reference_service.recording import wrap_from_env
from reference_service.serialize import predictions, serialize
from reference_service.store import StoreError, open_store
from reference_service.validation import ApiError, RequestRules, parse_instances, parse_json

log = logging.getLogger("reference_service")
DRAIN_LIMIT = 16 << 20  # read (and drop) oversized bodies up to this, so 413 reaches the client


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f}"


def server_timing(stages: dict[str, int]) -> str:
    return ", ".join(f"{name};dur={_ms(ns)}" for name, ns in stages.items())


class _Service:
    """Everything one worker needs to answer predictions."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.manifest = load_manifest(config.artifacts_dir)
        self.schema: dict[str, dict[str, Any]] = self.manifest["features"]
        self.models = load_models(config.artifacts_dir, self.manifest)
        self.defaults = {n: m["default_version"] for n, m in self.manifest["models"].items()}
        for name, version in config.default_versions.items():
            if (name, version) not in self.models:
                raise ValueError(f"default version {name}={version} is not in the artifacts "
                                 f"(have {sorted(self.models)})")
            self.defaults[name] = version
        store_meta = self.manifest["store"]
        self.store = open_store(
            config.store, sqlite_path=config.artifacts_dir / store_meta["sqlite"],
            redis_url=config.redis_url, user_columns=store_meta["user_columns"],
            item_columns=store_meta["item_columns"],
            categories={n: tuple(s["categories"]) for n, s in self.schema.items()
                        if s["kind"] == "categorical"})
        self.assemblers = {k: FeatureAssembler(m.features, self.schema)
                           for k, m in self.models.items()}
        self._warm_up()
        self.rules: dict[tuple[str, str], RequestRules] = {}
        for (name, version), m in self.models.items():
            accepted = {f for (n, _), other in self.models.items() if n == name
                        for f in other.features if self.schema[f]["source"] != "item"}
            self.rules[(name, version)] = RequestRules(
                name, m.features, frozenset(accepted), self.schema, m.takes_items,
                config.max_batch, config.max_items)
        state = config.faults_state
        if state is None:
            initial = load_file(config.faults_file) if config.faults_file else {}
            state = new_state_file(initial)
        elif not state.exists():
            write_state(state, load_file(config.faults_file) if config.faults_file else {})
        self.faults = FaultState(state, set(self.schema), set(self.defaults))
        self.faults.config()  # validate now: a bad fault file must fail the start, not requests
        self.metrics = metrics_mod.get_metrics()
        self._rng_pid = -1
        self._rng = random.Random()

    def _warm_up(self) -> None:
        # The first predict of a model pays one-off costs (lazy imports, thread pools, up to
        # seconds); pay them before /readyz says yes, not on a user's request.
        for key, model in self.models.items():
            row = self.assemblers[key].encode({n: s["default"] for n, s in self.schema.items()},
                                              {})
            model.predict_proba(np.array([row], dtype=np.float64))

    def rng(self) -> random.Random:
        # Forked workers must not share one random sequence (fault probabilities).
        if self._rng_pid != os.getpid():
            self._rng_pid = os.getpid()
            self._rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        return self._rng


def _error(err: ApiError) -> Response:
    resp = Response(_json_bytes(err.body()), status=err.status, mimetype="application/json")
    metrics_mod.get_metrics().errors.labels(err.kind).inc()
    return resp


def _json_bytes(obj: Any) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200) -> Response:
    return Response(_json_bytes(obj), status=status, mimetype="application/json")


def create_app(config: ServiceConfig | dict[str, Any] | None = None) -> Flask:
    """The WSGI app. ``config``: a ServiceConfig, or overrides of the environment's one."""
    if not isinstance(config, ServiceConfig):
        config = ServiceConfig.from_env(**(config or {}))
    svc = _Service(config)
    tracing.setup_from_env()  # REFSVC_TRACING: off (default), on, console, otlp
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["refsvc"] = svc

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            _drain()
            return _error(ApiError(413, "too_large", f"request body exceeds the limit of "
                                                     f"{config.max_body_bytes} bytes"))
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.code or 500, "http_error")
        return _error(ApiError(exc.code or 500, kind, exc.description or exc.name))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(ApiError(500, "internal_error", f"internal error: {type(exc).__name__}"))

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok", "pid": os.getpid()})

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            store = svc.store.check()
        except StoreError as exc:
            return _json({"status": "not_ready", "error": "store_unavailable",
                          "message": str(exc)}, 503)
        return _json({"status": "ready", "models": [f"{n}:{v}" for n, v in sorted(svc.models)],
                      "store": store})

    @app.get("/metrics")
    def metrics_view() -> Response:
        metrics_mod.get_metrics().sample_process()
        body, ctype = metrics_mod.exposition()
        return Response(body, content_type=ctype)

    @app.get("/v1/models")
    def list_models() -> Response:
        models = {}
        for name, entry in svc.manifest["models"].items():
            models[name] = {
                "default_version": svc.defaults[name],
                "input": entry["input"],
                "versions": {v: {"features": list(svc.models[(name, v)].features),
                                 "threshold": svc.models[(name, v)].threshold,
                                 "metrics": svc.models[(name, v)].metrics}
                             for v in entry["versions"]},
            }
        return _json({"models": models, "features": svc.schema})

    @app.get("/openapi.json")
    def openapi() -> Response:
        return _json(openapi_document(svc.manifest, svc.defaults))

    @app.post("/v1/models/<name>/predict")
    def predict(name: str) -> Response:
        return _predict(svc, name, None)

    @app.post("/v1/models/<name>/versions/<version>/predict")
    def predict_version(name: str, version: str) -> Response:
        return _predict(svc, name, version)

    if config.admin_token:
        from reference_service.admin import admin_blueprint

        app.register_blueprint(admin_blueprint(svc.faults, config.admin_token))
    # Off unless REFSVC_RECORD_TRAFFIC is set: records incoming traffic in the replay format.
    app.wsgi_app = wrap_from_env(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _drain() -> None:
    length = request.content_length
    if length is not None and length <= DRAIN_LIMIT:
        stream = request.environ.get("wsgi.input")
        while stream is not None and length > 0:
            chunk = stream.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)


def _body(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes. With a Content-Length, Flask enforces
    MAX_CONTENT_LENGTH itself (413 before reading); a chunked body has no length up front
    and Werkzeug would silently stop reading at the limit (a valid JSON followed by padding
    would pass truncated), so it is read here to one byte past the limit: over means 413."""
    if request.content_length is not None:
        return request.get_data(cache=False)
    stream = request.environ.get("wsgi.input")
    chunks, size = [], 0
    while stream is not None and size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def _predict(svc: _Service, name: str, path_version: str | None) -> Response:
    t0 = time.perf_counter_ns()
    raw = _body(svc.config.max_body_bytes)
    version = path_version
    body: Any = None
    try:
        if name not in svc.defaults:
            raise ApiError(404, "not_found", f"unknown model {name!r}; known: "
                                             f"{sorted(svc.defaults)}", "name")
        body = parse_json(raw)
        if version is None and isinstance(body, dict) and "version" in body:
            if not isinstance(body["version"], str):
                # Checked before assignment: the error path hashes (name, version).
                raise ApiError(422, "validation_error", "version: must be a string", "version")
            version = body["version"]
        elif path_version is not None and isinstance(body, dict) and "version" in body \
                and body["version"] != path_version:
            raise ApiError(422, "validation_error", f"version: body says {body['version']!r} "
                                                    f"but the path says {path_version!r}",
                           "version")
        version = version or svc.defaults[name]
        key = (name, version)
        if key not in svc.models:
            versions = sorted(v for n, v in svc.models if n == name)
            raise ApiError(404, "not_found", f"unknown version {version!r} of model {name!r}; "
                                             f"known: {versions}", "version")
        instances = parse_instances(body, svc.rules[key])
        return _run_stages(svc, key, instances, t0)
    except ApiError as err:
        if (name, version) in svc.models:
            svc.metrics.requests.labels(name, version, str(err.status)).inc()
        resp = _error(err)
        resp.headers["Server-Timing"] = server_timing({"app": time.perf_counter_ns() - t0})
        return resp
    except StoreError as exc:
        svc.metrics.requests.labels(name, version, "503").inc()
        log.warning("feature store error: %s", exc)
        resp = _error(ApiError(503, "store_unavailable", f"feature store unavailable: {exc}"))
        resp.headers["Server-Timing"] = server_timing({"app": time.perf_counter_ns() - t0})
        return resp


def _run_stages(svc: _Service, key: tuple[str, str], instances: list, t0: int) -> Response:
    name, version = key
    model = svc.models[key]
    faults = svc.faults.for_model(name)
    rng = svc.rng()
    m = svc.metrics

    t1 = time.perf_counter_ns()
    assembled = svc.assemblers[key].assemble(instances, svc.store, faults, rng)
    t2 = time.perf_counter_ns()
    proba, fired_infer = infer(model, assembled.X, faults, rng)
    t3 = time.perf_counter_ns()
    payload = {
        "model": name, "version": version, "request_id": uuid.uuid4().hex,
        "predictions": predictions(model.takes_items, proba, model.threshold,
                                   assembled.row_slices, assembled.entity_found,
                                   [i.item_ids for i in instances], assembled.items_not_found),
    }
    body, fired_ser = serialize(payload, faults, rng)
    t4 = time.perf_counter_ns()

    stages = {"fetch": t2 - t1, "infer": t3 - t2, "serialize": t4 - t3, "app": t4 - t0}
    resp = Response(body, status=200, mimetype="application/json")
    resp.headers["Server-Timing"] = server_timing(stages)
    resp.headers["X-Request-Id"] = payload["request_id"]
    g.refsvc_stages = stages

    for stage, ns in stages.items():
        if stage != "app":
            m.stage_duration.labels(name, version, stage).observe(ns / 1e9)
    m.request_duration.labels(name, version).observe(stages["app"] / 1e9)
    m.requests.labels(name, version, "200").inc()
    m.sample_process()
    if tracing.enabled():
        tracing.record_request(name, version, len(instances), (t0, t1, t2, t3, t4),
                               assembled.faults_fired + fired_infer + fired_ser,
                               request.headers.get("traceparent"))
    hist = m.probability.labels(name, version)
    for p in proba.tolist():
        hist.observe(p)
    for feature, n in assembled.missing.items():
        m.missing_features.labels(name, feature).inc(n)
    m.feature_rows.labels(name).inc(len(assembled.X))
    for feature, n in assembled.nulls.items():
        m.null_features.labels(name, feature).inc(n)
    for fault in assembled.faults_fired + fired_infer + fired_ser:
        m.faults.labels(fault).inc()
    return resp
