"""The Prometheus collector: the target's ``/metrics`` at the start and end of the window.

Files (docs/monitoring.md): ``metrics/start.prom`` scraped at ``measure_start``,
``metrics/end.prom`` scraped when the load has stopped (before the service is stopped),
optionally ``metrics/t+<seconds>.prom`` every ``every_s`` seconds in between, and
``metrics/scrapes.json`` (``{"url", "scrapes": [{"file", "label", "t", "bytes"}]}``).
Each file is the text exposition exactly as served, so any Prometheus tool reads it.
A counter or histogram over the window is ``end - start``; the readers of these files are in
``harness.rundir.scrapes``.

A target without ``/metrics`` (404, refused, not Prometheus text) makes no files and the
status says why; the run goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.httpget import GetError, bounded_get
from harness.rundir import write_json_atomic
from harness.rundir.atomic import write_text_atomic

__all__ = ["SPEC", "PrometheusCollector", "PrometheusOptions", "scrape"]

_OPTIONS = {"url", "every_s", "timeout_s"}


#: /metrics bodies above this are not kept: large services expose a few MiB; the scrape is
#: held in memory (twice, as bytes and text) while it is written
MAX_SCRAPE_BYTES = 16 * 1024 * 1024


def scrape(url: str, timeout_s: float = 5.0) -> str:
    """GET ``url`` and return the exposition text; ValueError saying why when it is not one.

    Bounded (harness/run/collectors/httpget.py): the whole scrape within ``timeout_s``, the
    body within MAX_SCRAPE_BYTES; a body cut mid-way is an error too. When the target
    passed a bound the message says "exceeded a bound" (the self-check names it)."""
    try:
        status, raw = bounded_get(url, deadline_s=timeout_s, max_bytes=MAX_SCRAPE_BYTES,
                                  headers={"Accept": "text/plain"})
    except GetError as exc:
        passed = "the target exceeded a bound: " if exc.bound else ""
        raise ValueError(f"{passed}could not scrape {url}: {exc}") from None
    if status >= 300:
        raise ValueError(f"target serves no Prometheus metrics at {url} (HTTP {status})")
    body = raw.decode("utf-8", errors="replace")
    # An empty 200 is a valid exposition: a multiprocess service that has not observed
    # anything yet has no series (every counter is still 0).
    if body.strip() and "# TYPE" not in body and "# HELP" not in body:
        raise ValueError(f"{url} did not answer Prometheus text exposition "
                         f"(first bytes {body[:60]!r})")
    return body


@dataclass(frozen=True)
class PrometheusOptions:
    """Options of the Prometheus collector (no command-line flags).

    Attributes:
        url: the metrics endpoint; None: the target's ``/metrics``.
        every_s: also scrape every this many seconds (>= 1) between start and end.
        timeout_s: of one scrape.
    """

    url: str | None = None
    every_s: float | None = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.url is not None and (not isinstance(self.url, str)
                                     or not self.url.startswith(("http://", "https://"))):
            raise ValueError(f"url must be an http(s) URL (got {self.url!r})")
        every_s = self.every_s
        if every_s is not None and (isinstance(every_s, bool) or not isinstance(
                every_s, (int, float)) or not every_s >= 1):
            raise ValueError(f"every_s must be >= 1 second or None (got {every_s!r})")
        if isinstance(self.timeout_s, bool) or not (isinstance(self.timeout_s, (int, float))
                                                    and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0 (got {self.timeout_s!r})")


class PrometheusCollector:
    """Scrapes the target's metrics endpoint into the run directory (see module doc)."""

    name = "prometheus"

    def __init__(self, url: str, every_s: float | None = None, timeout_s: float = 5.0) -> None:
        if not isinstance(url, str):
            raise ValueError(f"url must be an http(s) URL (got {url!r})")
        PrometheusOptions(url, every_s, timeout_s)  # ValueError names the bad value
        self.url, self.every_s, self.timeout_s = url, every_s, float(timeout_s)
        self._ctx: CollectorContext | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scrapes: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._status: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PrometheusCollector:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown prometheus collector options {sorted(unknown)} "
                             f"(known: {sorted(_OPTIONS)})")
        if "url" not in options:
            raise ValueError("prometheus collector needs option 'url' (got none)")
        return cls(options["url"], options.get("every_s"), options.get("timeout_s", 5.0))

    def start(self, ctx: CollectorContext) -> None:
        self._ctx = ctx
        (ctx.run_dir / "metrics").mkdir(exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="prometheus-scraper",
                                        daemon=True)
        self._thread.start()

    def _scrape_to(self, label: str) -> bool:
        assert self._ctx is not None
        t = time.time()
        try:
            text = scrape(self.url, self.timeout_s)
        except ValueError as exc:
            self._errors.append(f"{label}: {exc}")
            return False
        path = self._ctx.run_dir / "metrics" / f"{label}.prom"
        write_text_atomic(path, text)
        with self._lock:
            self._scrapes.append({"file": path.name, "label": label, "t": t,
                                  "bytes": len(text.encode())})
            write_json_atomic(self._ctx.run_dir / "metrics" / "scrapes.json",
                              {"url": self.url, "scrapes": list(self._scrapes)})
        return True

    def _loop(self) -> None:
        assert self._ctx is not None
        if self._stop.wait(max(0.0, self._ctx.measure_start - time.time())):
            return
        self._scrape_to("start")
        if self.every_s is None:
            return
        start = self._ctx.measure_start
        while not self._stop.wait(self.every_s):
            self._scrape_to(f"t+{time.time() - start:.0f}")

    def stop(self) -> dict[str, Any]:
        if self._status is not None:
            return self._status
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
        ended = self._ctx is not None and self._scrape_to("end")
        labels = [s["label"] for s in self._scrapes]
        ok = ended and "start" in labels
        reason = None if ok else ("; ".join(self._errors) or "the collector was not started")
        self._status = {"ok": ok, "reason": reason, "url": self.url,
                        "scrapes": len(self._scrapes), "errors": list(self._errors)}
        return self._status


def _create(opts: PrometheusOptions, ctx: CollectorContext) -> PrometheusCollector:
    if opts.url is None and ctx.target_url is None:
        raise ValueError("prometheus collector needs option 'url' or a target URL (got none)")
    url = opts.url or str(ctx.target_url).rstrip("/") + "/metrics"
    return PrometheusCollector(url, opts.every_s, opts.timeout_s)


# At the load's start, when measure_start is known: the "start" scrape waits for it.
# /metrics at the window's start and end: prediction shift and missing features.
SPEC = CollectorSpec(name="prometheus", at="load", options=PrometheusOptions, create=_create,
                     stop_timeout_s=30.0)
