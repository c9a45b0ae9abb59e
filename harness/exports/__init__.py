"""Monitoring exports from the SLO file: Prometheus rules, Alertmanager, Grafana, a local stack.

docs/monitoring.md describes each; ``harness export`` is the command.
"""

from __future__ import annotations

from harness.exports.alertmanager import alertmanager_config, render_alertmanager
from harness.exports.grafana import dashboard, write_grafana
from harness.exports.prometheus_rules import prometheus_rules, render_rules, slo_targets

__all__ = ["alertmanager_config", "dashboard", "prometheus_rules", "render_alertmanager",
           "render_rules", "slo_targets", "write_grafana"]
