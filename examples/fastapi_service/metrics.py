"""Prometheus metrics, the usual way: module-level metric objects and GET /metrics.

With several uvicorn workers every process has its own counters; with
``PROMETHEUS_MULTIPROC_DIR`` set (the launcher does it for ``--workers`` > 1, an empty
directory made before the workers start) each worker writes its samples to files there and
/metrics sums all workers' files, whichever worker answers the scrape.

- ``fastsvc_http_request_duration_seconds{method,route}``: histogram of the whole request
  inside the worker (middleware to response), by route template;
- ``fastsvc_http_requests_total{method,route,status}``: requests by HTTP status;
- ``fastsvc_predictions_total{model,version}``: rows predicted;
- ``fastsvc_null_features_total{model,feature}``: model input rows where that feature
  arrived null (a few ``rating`` nulls are normal: new restaurants have none);
- ``fastsvc_feature_rows_total{model}``: model input rows assembled (the denominator).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Sub-millisecond at the low end (v1 answers in ~1 ms), seconds at the high end (faults).
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
           0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_LATENCY = Histogram(
    "fastsvc_http_request_duration_seconds", "HTTP request duration inside the worker",
    ["method", "route"], buckets=BUCKETS)
REQUESTS = Counter(
    "fastsvc_http_requests", "HTTP requests by status", ["method", "route", "status"])
PREDICTIONS = Counter("fastsvc_predictions", "Rows predicted", ["model", "version"])
NULL_FEATURES = Counter(
    "fastsvc_null_features", "Model input rows where the feature arrived null",
    ["model", "feature"])
FEATURE_ROWS = Counter("fastsvc_feature_rows", "Model input rows assembled", ["model"])


def render() -> tuple[bytes, str]:
    """(body, content type) of a scrape, summed over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
