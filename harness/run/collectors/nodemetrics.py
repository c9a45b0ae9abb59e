"""The node_metrics collector: the service host's CPU and memory from its node_exporter.

``harness run ... --node-metrics URL`` (a node_exporter's ``/metrics`` on the host the
service runs on) scrapes it every ``every_s`` seconds during the run into
``metrics/node.csv`` (harness.rundir.telemetry: the host's cumulative CPU seconds by mode,
its CPU count, MemTotal, MemAvailable, node_load1) and ``metrics/node_status.json``. Off
unless a URL is given. The summary, report and diagnosis turn successive rows into busy
cores, % of the host's CPUs, iowait and steal.

Each scrape is bounded (a deadline and 16 MiB, as every scrape of the harness); a scrape
that fails is counted in ``failed_scrapes`` with its message in ``errors`` (the self-check
warns), and the scrapes go on. A URL that answers something other than node_exporter's
metrics (no ``node_cpu_seconds_total``) is counted in ``without_node_metrics``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.metricsloop import ScrapeLoop, check_every, check_url, write_status
from harness.rundir.telemetry import NODE_COLUMNS, node_row, parse_node_csv

__all__ = ["SPEC", "NodeMetricsCollector", "NodeMetricsOptions"]


@dataclass(frozen=True)
class NodeMetricsOptions:
    """Options of the node_metrics collector.

    Attributes:
        url: node_exporter's metrics URL on the service's host (``--node-metrics``); None:
            the collector is off.
        every_s: seconds between scrapes (0.25-60; ``--node-metrics-every``).
        timeout_s: of one scrape.
    """

    url: str | None = None
    every_s: float = 1.0
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.url is not None:
            check_url(self.url, "node metrics url (--node-metrics)")
        object.__setattr__(self, "every_s", check_every(
            self.every_s, "node metrics interval (--node-metrics-every)"))
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not 0 < self.timeout_s <= 60:
            raise ValueError(f"node metrics timeout_s must be > 0 and <= 60 "
                             f"(got {self.timeout_s!r})")


class NodeMetricsCollector:
    """Scrapes a node_exporter (see the module doc)."""

    name = "node_metrics"

    def __init__(self, url: str, every_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.url = check_url(url, "node metrics url (--node-metrics)")
        self._loop = ScrapeLoop(url, every_s, timeout_s, node_row, NODE_COLUMNS)
        self._dir: Path | None = None
        self._status: dict[str, Any] | None = None

    def start(self, ctx: CollectorContext) -> None:
        self._dir = ctx.run_dir / "metrics"
        self._loop.start(self._dir / "node.csv")

    def stop(self) -> dict[str, Any]:
        if self._status is not None:
            return self._status
        if self._dir is None:
            self._status = {"ok": False, "reason": "the collector was not started",
                            "url": self.url}
            return self._status
        self._loop.finish()
        counts = self._loop.counts()
        path = self._dir / "node.csv"
        rows, _ = parse_node_csv(path.read_text() if path.is_file() else "")
        ok = len(rows) >= 2
        reason = None
        if not ok:
            reason = (f"{self.url} answered no node_cpu_seconds_total (not a node_exporter?)"
                      if self._loop.empty else "; ".join(counts["errors"][:1])
                      or "fewer than 2 scrapes: no rate")
        self._status = {"ok": ok, "reason": reason, "source": "node_exporter",
                        "cpus": rows[-1].cpus if rows else None,
                        "without_node_metrics": self._loop.empty, **counts}
        write_status(self._dir / "node_status.json", self._status)
        return self._status


def _create(opts: NodeMetricsOptions, _ctx: CollectorContext) -> NodeMetricsCollector:
    if opts.url is None:
        raise ValueError("node_metrics collector needs option 'url' (got none)")
    return NodeMetricsCollector(opts.url, opts.every_s, opts.timeout_s)


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--node-metrics", metavar="URL",
                       help="a node_exporter's /metrics on the service's host: its CPU, "
                            "memory and load, scraped during the run")
    group.add_argument("--node-metrics-every", type=float, default=1.0, metavar="SECONDS",
                       help="seconds between node_exporter scrapes (default 1)")


def _from_args(args: argparse.Namespace) -> NodeMetricsOptions | None:
    if args.node_metrics is None:
        return None
    return NodeMetricsOptions(url=args.node_metrics, every_s=args.node_metrics_every)


SPEC = CollectorSpec(name="node_metrics", at="process", options=NodeMetricsOptions,
                     create=_create, default_on=False, add_flags=_add_flags,
                     from_args=_from_args, stop_timeout_s=15.0,
                     title="node_metrics collector (the service host's node_exporter)")
