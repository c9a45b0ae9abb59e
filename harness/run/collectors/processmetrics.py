"""The process_metrics collector: a remote target's CPU and memory from its own /metrics.

When the target's processes are not on this machine (a URL on another host, or
``--target-remote``), psutil cannot see them. Most services still publish their own
process: prometheus_client's default registry (and most exporters) serve
``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_open_fds``, ``process_max_fds`` and
``process_start_time_seconds``. This collector scrapes the target's metrics endpoint (the
prometheus collector's: ``--metrics-url``, else ``TARGET/metrics``) every ``every_s``
seconds during the run into ``metrics/process.csv`` (harness.rundir.telemetry), and
``metrics/process_status.json``.

What the samples are of, said in the status (``what``):

- one process (its start time never changes): "process_* of the one process that answered
  the scrape", a single uvicorn process or any single-process service;
- several processes in turn (the start time alternates between values: each scrape is
  answered by whichever worker accepted it, gunicorn or uvicorn --workers without a
  multiprocess registry): each row is one worker; CPU is computed only between rows of the
  same worker and the service's total is not known;
- none: a multiprocess prometheus_client (PROMETHEUS_MULTIPROC_DIR, how gunicorn services
  count across workers) exports no process_* for its workers; the reference service is such
  a service. The status says so and the run goes on.

A local target (the harness found or started its processes) is sampled by psutil
(resources); this collector then does nothing unless ``always`` is set.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.metricsloop import ScrapeLoop, check_every, check_url, write_status
from harness.rundir.telemetry import PROCESS_COLUMNS, parse_process_csv, process_row

__all__ = ["SPEC", "ProcessMetricsCollector", "ProcessMetricsOptions", "describe_processes"]

LOCAL_NOTE = "the target is local: psutil samples its processes (resources)"


@dataclass(frozen=True)
class ProcessMetricsOptions:
    """Options of the process_metrics collector.

    Attributes:
        url: the metrics endpoint; None: the prometheus collector's (--metrics-url), else
            the target's ``/metrics``.
        every_s: seconds between scrapes (0.25-60; ``--process-metrics-every``).
        timeout_s: of one scrape.
        always: scrape a local target too (psutil stays the summary's source).
    """

    url: str | None = None
    every_s: float = 1.0
    timeout_s: float = 2.0
    always: bool = False

    def __post_init__(self) -> None:
        if self.url is not None:
            check_url(self.url, "process metrics url (--metrics-url)")
        object.__setattr__(self, "every_s", check_every(
            self.every_s, "process metrics interval (--process-metrics-every)"))
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not 0 < self.timeout_s <= 60:
            raise ValueError(f"process metrics timeout_s must be > 0 and <= 60 "
                             f"(got {self.timeout_s!r})")
        if not isinstance(self.always, bool):
            raise ValueError(f"process metrics always must be true or false "
                             f"(got {self.always!r})")


def describe_processes(starts: list[float], series: int) -> tuple[str, int]:
    """What the process_* rows are of, from their start times in scrape order: (words,
    distinct processes). A start time that comes back after another one means several
    processes answered in turn; one that moves on for good is a restart."""
    distinct: list[float] = []
    for s in starts:
        if not any(abs(s - d) <= 1.0 for d in distinct):
            distinct.append(s)
    if not starts:
        return "no process_* metrics", 0
    if series > 1:
        return (f"process_* summed over {series} series by the exporter (several processes "
                "aggregated)"), series
    runs = 1 + sum(abs(b - a) > 1.0 for a, b in zip(starts, starts[1:], strict=False))
    if len(distinct) == 1:
        return "process_* of the one process that answered the scrape", 1
    if runs == len(distinct):  # each start time once, in order: the process restarted
        return (f"process_* of the one process that answered the scrape, restarted "
                f"{len(distinct) - 1} time(s)"), len(distinct)
    return (f"process_* of {len(distinct)} processes that answered the scrapes in turn "
            "(one worker per scrape): CPU per worker between its own scrapes; the service's "
            "total is not known"), len(distinct)


class ProcessMetricsCollector:
    """Scrapes process_* of the target's metrics endpoint (see the module doc)."""

    name = "process_metrics"

    def __init__(self, url: str, options: ProcessMetricsOptions) -> None:
        self.url = check_url(url, "process metrics url")
        self.options = options
        # a target that serves no metrics at all is not asked every second of the run
        self._loop = ScrapeLoop(url, options.every_s, options.timeout_s, process_row,
                                PROCESS_COLUMNS, give_up=3)
        self._dir: Path | None = None
        self._skipped: str | None = None
        self._status: dict[str, Any] | None = None

    def start(self, ctx: CollectorContext) -> None:
        if ctx.service_pid is not None and not self.options.always:
            self._skipped = LOCAL_NOTE
            return
        self._dir = ctx.run_dir / "metrics"
        self._loop.start(self._dir / "process.csv")

    def stop(self) -> dict[str, Any]:
        if self._status is not None:
            return self._status
        if self._dir is None:
            self._status = {"ok": True, "skipped": self._skipped or "not started",
                            "url": self.url}
            return self._status
        self._loop.finish()
        counts = self._loop.counts()
        rows, _ = parse_process_csv((self._dir / "process.csv").read_text()
                                    if (self._dir / "process.csv").is_file() else "")
        starts = [r.start_time_seconds for r in rows if math.isfinite(r.start_time_seconds)]
        what, processes = describe_processes(starts, max((r.series for r in rows), default=0))
        if not rows and self._loop.empty:
            what = ("no process_* metrics at the target's endpoint (a multiprocess "
                    "prometheus_client, as under gunicorn, exports none for its workers)")
        ok = bool(rows)
        self._status = {
            "ok": ok, "source": "process_* of /metrics", "what": what, "processes": processes,
            "without_process_metrics": self._loop.empty, **counts,
            "reason": None if ok else (what if self._loop.empty else
                                       "; ".join(counts["errors"][:1]) or "no scrape answered")}
        write_status(self._dir / "process_status.json", self._status)
        return self._status


def _create(opts: ProcessMetricsOptions, ctx: CollectorContext) -> ProcessMetricsCollector:
    if opts.url is None and ctx.target_url is None:
        raise ValueError("process_metrics collector needs option 'url' or a target URL "
                         "(got none)")
    url = opts.url or str(ctx.target_url).rstrip("/") + "/metrics"
    return ProcessMetricsCollector(url, opts)


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--process-metrics-every", type=float, default=1.0, metavar="SECONDS",
                       help="a remote target: seconds between scrapes of its process_* "
                            "metrics (default 1)")
    group.add_argument("--no-process-metrics", action="store_true",
                       help="do not scrape a remote target's process_* metrics")


def _from_args(args: argparse.Namespace) -> ProcessMetricsOptions | None:
    if args.no_process_metrics:
        return None
    return ProcessMetricsOptions(url=getattr(args, "metrics_url", None),
                                 every_s=args.process_metrics_every)


# With the driver process, like resources: its rows cover the warm-up as psutil's do.
SPEC = CollectorSpec(name="process_metrics", at="process", options=ProcessMetricsOptions,
                     create=_create, add_flags=_add_flags, from_args=_from_args,
                     stop_timeout_s=15.0,
                     title="process_metrics collector (a remote target's process_* metrics)")
