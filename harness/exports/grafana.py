"""A Grafana dashboard of the model service, and the provisioning files that load it.

Panels (every query names a metric the reference service exports, checked by a test that
scrapes a running service): request rate, error ratio and errors by kind, request and
stage latency percentiles (``histogram_quantile`` over the bucket rates), the
predicted-probability distribution (heatmap of bucket increases), missing features, and
each worker's CPU and resident memory. Variables: ``datasource`` and ``model``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DASHBOARD_UID", "dashboard", "provisioning", "write_grafana", "query_metrics"]

DASHBOARD_UID = "mlserve-refsvc"
_DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'model=~"$model"'


def _target(expr: str, legend: str, ref: str, fmt: str | None = None) -> dict[str, Any]:
    t = {"datasource": _DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if fmt:
        t["format"] = fmt
    return t


def _panel(pid: int, title: str, targets: list[dict[str, Any]], unit: str,
           x: int, y: int, kind: str = "timeseries", w: int = 12) -> dict[str, Any]:
    return {"id": pid, "type": kind, "title": title, "datasource": _DS,
            "gridPos": {"h": 8, "w": w, "x": x, "y": y}, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}


def _quantiles(metric: str, by: str, extra: str = "") -> list[dict[str, Any]]:
    sel = M + extra
    return [_target(f"histogram_quantile({q}, sum by (le, {by}) "
                    f"(rate({metric}_bucket{{{sel}}}[$__rate_interval])))",
                    f"p{round(q * 100, 1):g} {{{{{by}}}}}", chr(ord("A") + i))
            for i, q in enumerate((0.5, 0.9, 0.99))]


def dashboard() -> dict[str, Any]:
    """The dashboard JSON model (schemaVersion 39, Grafana 10/11)."""
    panels = [
        _panel(1, "Request rate by model, version and status", [_target(
            f"sum by (model, version, status) (rate(refsvc_requests_total{{{M}}}"
            "[$__rate_interval]))", "{{model}} {{version}} {{status}}", "A")], "reqps", 0, 0),
        _panel(2, "Error ratio and errors by kind", [
            _target(f'sum(rate(refsvc_requests_total{{{M},status!~"2.."}}[$__rate_interval])) '
                    f"/ sum(rate(refsvc_requests_total{{{M}}}[$__rate_interval]))",
                    "error ratio", "A"),
            _target("sum by (kind) (rate(refsvc_errors_total[$__rate_interval]))",
                    "{{kind}} /s", "B")], "percentunit", 12, 0),
        _panel(3, "Request latency (app) percentiles", _quantiles(
            "refsvc_request_duration_seconds", "model"), "s", 0, 8),
        _panel(4, "Stage latency percentiles (fetch, infer, serialize)", _quantiles(
            "refsvc_stage_duration_seconds", "stage"), "s", 12, 8),
        _panel(5, "Predicted probability distribution", [_target(
            f"sum by (le) (increase(refsvc_prediction_probability_bucket{{{M}}}"
            "[$__rate_interval]))", "{{le}}", "A", "heatmap")], "short", 0, 16, "heatmap"),
        _panel(6, "Missing features (upstream schema change)", [_target(
            f"sum by (model, feature) (rate(refsvc_missing_features_total{{{M}}}"
            "[$__rate_interval]))", "{{model}} {{feature}}", "A")], "short", 12, 16),
        _panel(7, "Worker CPU (cores)", [_target(
            "deriv(refsvc_worker_cpu_seconds[2m])", "pid {{pid}}", "A")], "short", 0, 24),
        _panel(8, "Worker resident memory", [_target(
            "refsvc_worker_resident_memory_bytes", "pid {{pid}}", "A")], "bytes", 12, 24),
    ]
    return {
        "uid": DASHBOARD_UID, "title": "Model service (mlserve harness)",
        "tags": ["mlserve", "slo"], "timezone": "browser", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus", "current": {}, "hide": 0},
            {"name": "model", "type": "query", "datasource": _DS, "label": "model",
             "query": {"query": "label_values(refsvc_requests_total, model)", "refId": "m"},
             "definition": "label_values(refsvc_requests_total, model)", "refresh": 2,
             "includeAll": True, "multi": True, "allValue": ".+", "current": {}, "hide": 0},
        ]},
        "annotations": {"list": []}, "panels": panels,
    }


def provisioning(dashboards_dir: str, prometheus_url: str) -> dict[str, str]:
    """Grafana provisioning files (relative path -> YAML text): data source and dashboards."""
    if not prometheus_url.startswith(("http://", "https://")):
        raise ValueError(f"prometheus_url must be an http(s) URL (got {prometheus_url!r})")
    ds = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "access": "proxy", "url": prometheus_url,
        "isDefault": True, "jsonData": {"timeInterval": "15s"}}]}
    dash = {"apiVersion": 1, "providers": [{
        "name": "mlserve", "folder": "mlserve", "type": "file", "disableDeletion": False,
        "allowUiUpdates": True, "options": {"path": dashboards_dir}}]}
    return {"provisioning/datasources/mlserve.yaml": yaml.safe_dump(ds, sort_keys=False),
            "provisioning/dashboards/mlserve.yaml": yaml.safe_dump(dash, sort_keys=False)}


def write_grafana(out_dir: str | Path, prometheus_url: str = "http://127.0.0.1:9090"
                  ) -> list[Path]:
    """Write ``dashboards/mlserve-refsvc.json`` and the provisioning files under ``out_dir``."""
    out = Path(out_dir)
    dash_dir = out / "dashboards"
    dash_dir.mkdir(parents=True, exist_ok=True)
    written = [dash_dir / f"{DASHBOARD_UID}.json"]
    written[0].write_text(json.dumps(dashboard(), indent=2) + "\n")
    for rel, text in provisioning(str(dash_dir.resolve()), prometheus_url).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


_METRIC = re.compile(r"\b(refsvc_[a-z0-9_]+)")


def query_metrics(dash: dict[str, Any]) -> set[str]:
    """Every metric name a panel query reads (``_bucket``/``_count``/``_sum`` kept)."""
    names: set[str] = set()
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            names.update(_METRIC.findall(t["expr"]))
    return names
