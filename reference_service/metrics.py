"""Prometheus metrics of the service, correct across gunicorn's worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``launch.gunicorn_command`` does it, and
``gunicorn_conf`` wipes the directory at start and marks dead workers), every worker writes
its samples to mmap files there and ``/metrics`` aggregates them all, whichever worker
answers. Labels stay low-cardinality: model, version, stage, status code, error kind.

Metrics (all names prefixed ``refsvc_``):
- ``request_duration_seconds{model,version}``: histogram of the whole handler (= ``app``);
- ``stage_duration_seconds{model,version,stage}``: histogram per Server-Timing stage;
- ``requests_total{model,version,status}``: prediction requests by HTTP status;
- ``errors_total{kind}``: error responses by kind (bad_json, validation, not_found, ...);
- ``prediction_probability{model,version}``: histogram of predicted probabilities/scores;
- ``missing_features_total{model,feature}``: features absent after assembly (renamed upstream);
- ``null_features_total{model,feature}``: model input rows where a feature arrived null (an
  upstream change nulling a column; some nulls are normal, training has them too);
- ``feature_rows_total{model}``: model input rows assembled (the denominator of both above:
  one per instance, one per candidate item for ranking);
- ``faults_injected_total{fault}``: how often each injected fault fired;
- ``worker_cpu_seconds{pid}``, ``worker_resident_memory_bytes{pid}``: each live worker's own
  CPU time and RSS (gauges, ``liveall``: one series per live worker pid), refreshed at most
  once a second per worker by its requests and by a scrape it answers (the multiprocess
  collector has no process metrics of its own).
"""

from __future__ import annotations

import os
import resource
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# ms-scale inference needs sub-ms resolution at the low end; faults reach seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
PROBABILITY_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))


class Metrics:
    """The service's metric objects, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "refsvc_request_duration_seconds", "Prediction handler duration (app stage)",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_duration = Histogram(
            "refsvc_stage_duration_seconds", "Duration of one stage of a prediction request",
            ["model", "version", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(
            "refsvc_requests", "Prediction requests by HTTP status",
            ["model", "version", "status"], registry=r)
        self.errors = Counter("refsvc_errors", "Error responses by kind", ["kind"], registry=r)
        self.probability = Histogram(
            "refsvc_prediction_probability", "Predicted probabilities (ranking: item scores)",
            ["model", "version"], buckets=PROBABILITY_BUCKETS, registry=r)
        self.missing_features = Counter(
            "refsvc_missing_features", "Model inputs absent after feature assembly",
            ["model", "feature"], registry=r)
        self.null_features = Counter(
            "refsvc_null_features", "Model input rows where a feature arrived null",
            ["model", "feature"], registry=r)
        self.feature_rows = Counter(
            "refsvc_feature_rows", "Model input rows assembled", ["model"], registry=r)
        self.faults = Counter(
            "refsvc_faults_injected", "Injected faults that fired", ["fault"], registry=r)
        self.worker_cpu = Gauge(
            "refsvc_worker_cpu_seconds", "CPU time (user + system) of this worker process",
            registry=r, multiprocess_mode="liveall")
        self.worker_rss = Gauge(
            "refsvc_worker_resident_memory_bytes", "Resident memory of this worker process",
            registry=r, multiprocess_mode="liveall")
        self._sampled_at = -1.0

    def sample_process(self) -> None:
        """Refresh this worker's CPU and RSS gauges, at most once a second (cheap to call)."""
        now = time.monotonic()
        if now - self._sampled_at < 1.0:
            return
        self._sampled_at = now
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.worker_cpu.set(usage.ru_utime + usage.ru_stime)
        try:
            with open("/proc/self/statm") as f:
                self.worker_rss.set(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, IndexError):
            pass  # not Linux: the RSS series stays absent rather than wrong


def exposition() -> tuple[bytes, str]:
    """The text exposition of all workers (multiprocess) or of this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        for attempt in (1, 2):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            try:
                return generate_latest(registry), CONTENT_TYPE_LATEST
            except FileNotFoundError:
                # A dead worker's file was folded into the archive between the listing and
                # the read (metrics_compact.py); the next listing is consistent.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
    return generate_latest(_single_process_registry()), CONTENT_TYPE_LATEST


_METRICS: Metrics | None = None


def get_metrics() -> Metrics:
    """One Metrics per process: prometheus_client refuses duplicate names in a registry."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS


def _single_process_registry() -> CollectorRegistry:
    return get_metrics().registry


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit`` hook)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
