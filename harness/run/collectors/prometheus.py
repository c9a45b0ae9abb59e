"""The Prometheus collector: the target's ``/metrics`` at the start and end of the window.

Files (docs/monitoring.md): ``metrics/start.prom`` scraped at ``measure_start``,
``metrics/end.prom`` scraped when the load has stopped (before the service is stopped),
optionally ``metrics/t+<seconds>.prom`` every ``every_s`` seconds in between,
``metrics/scrapes.json`` (``{"url", "scrapes": [{"file", "label", "t", "bytes"}]}``) and
``metrics/status.json`` (the status ``stop()`` returns, also in run.json).
Each file is the text exposition exactly as served, so any Prometheus tool reads it.
A counter or histogram over the window is ``end - start``; the readers of these files are in
``harness.rundir.scrapes``.

The endpoint is the target's ``/metrics`` unless ``--metrics-url URL`` (option ``url``)
names another (MLServer serves its metrics on a port of their own: 404 at its HTTP port).
A target without metrics there (404, refused, not Prometheus text) makes no files and the
status says why (``reason``, and ``failure``: the first failed scrape in a few words, which
the self-check prints as information); the run goes on. A body above
:data:`MAX_BODY_BYTES` is refused: the target is not trusted.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.httpget import GetError, bounded_get
from harness.rundir import clock, write_json_atomic
from harness.rundir.atomic import write_text_atomic

__all__ = ["MAX_BODY_BYTES", "SPEC", "PrometheusCollector", "PrometheusOptions", "ScrapeError",
           "scrape"]

_OPTIONS = {"url", "every_s", "timeout_s"}
#: a scrape larger than this is refused (a busy MLServer answers 40 kB; Prometheus's own
#: default body_size_limit is unlimited, a target the harness does not trust is not)
MAX_BODY_BYTES = 16 * 2**20


class ScrapeError(ValueError):
    """A scrape that did not return an exposition; ``failure`` says why in a few words."""

    def __init__(self, message: str, failure: str) -> None:
        super().__init__(message)
        self.failure = failure


def scrape(url: str, timeout_s: float = 5.0) -> str:
    """GET ``url`` and return the exposition text; ScrapeError saying why when it is not one.

    Bounded (harness/run/collectors/httpget.py): the whole scrape within ``timeout_s``, the
    body within MAX_BODY_BYTES; a body cut mid-way is an error too. When the target
    passed a bound the message says "exceeded a bound" (the self-check names it)."""
    try:
        status, raw = bounded_get(url, deadline_s=timeout_s, max_bytes=MAX_BODY_BYTES,
                                  headers={"Accept": "text/plain"})
    except GetError as exc:
        passed = "the target exceeded a bound: " if exc.bound else ""
        failure = (f"a body over {MAX_BODY_BYTES} bytes at {url}" if exc.bound == "bytes"
                   else f"{exc} at {url}")
        raise ScrapeError(f"{passed}could not scrape {url}: {exc}", failure) from None
    if status >= 300:
        raise ScrapeError(f"target serves no Prometheus metrics at {url} (HTTP {status})",
                          f"HTTP {status} at {url}")
    body = raw.decode("utf-8", errors="replace")
    # An empty 200 is a valid exposition: a multiprocess service that has not observed
    # anything yet has no series (every counter is still 0).
    if body.strip() and "# TYPE" not in body and "# HELP" not in body:
        raise ScrapeError(f"{url} did not answer Prometheus text exposition "
                          f"(first bytes {body[:60]!r})", f"not Prometheus text at {url}")
    return body


@dataclass(frozen=True)
class PrometheusOptions:
    """Options of the Prometheus collector (``harness run --metrics-url``).

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
            raise ValueError(f"metrics url (--metrics-url) must be an http(s) URL "
                             f"(got {self.url!r})")
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
        self._failure: str | None = None
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
        t = clock.now()
        try:
            text = scrape(self.url, self.timeout_s)
        except ValueError as exc:
            self._errors.append(f"{label}: {exc}")
            self._failure = self._failure or getattr(exc, "failure", str(exc))
            return False
        path = self._ctx.run_dir / "metrics" / f"{label}.prom"
        try:  # a full disk or a removed directory ends the scrapes, not the run
            write_text_atomic(path, text)
            with self._lock:
                self._scrapes.append({"file": path.name, "label": label, "t": t,
                                      "bytes": len(text.encode())})
                write_json_atomic(self._ctx.run_dir / "metrics" / "scrapes.json",
                                  {"url": self.url, "scrapes": list(self._scrapes)})
        except OSError as exc:
            self._errors.append(f"{label}: could not write {path.name}: {exc}")
            self._failure = self._failure or f"could not write {path.name}: {exc.strerror}"
            return False
        return True

    def _loop(self) -> None:
        assert self._ctx is not None
        if self._stop.wait(max(0.0, self._ctx.measure_start - clock.now())):
            return
        self._scrape_to("start")
        if self.every_s is None:
            return
        start = self._ctx.measure_start
        while not self._stop.wait(self.every_s):
            self._scrape_to(f"t+{clock.now() - start:.0f}")

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
                        "scrapes": len(self._scrapes), "errors": list(self._errors),
                        "failure": None if ok else self._failure or reason}
        if self._ctx is not None:  # the summary is made before run.json gets this status
            try:
                write_json_atomic(self._ctx.run_dir / "metrics" / "status.json", self._status)
            except OSError:
                pass  # a full disk: run.json (written from the reserve) still gets the status
        return self._status


def _create(opts: PrometheusOptions, ctx: CollectorContext) -> PrometheusCollector:
    if opts.url is None and ctx.target_url is None:
        raise ValueError("prometheus collector needs option 'url' or a target URL (got none)")
    url = opts.url or str(ctx.target_url).rstrip("/") + "/metrics"
    return PrometheusCollector(url, opts.every_s, opts.timeout_s)


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--metrics-url", metavar="URL",
                       help="the service's Prometheus endpoint, scraped at the window's start "
                            "and end (default: TARGET/metrics)")


def _from_args(args: argparse.Namespace) -> PrometheusOptions:
    return PrometheusOptions(url=args.metrics_url)


# At the load's start, when measure_start is known: the "start" scrape waits for it.
# /metrics at the window's start and end: prediction shift and missing features.
SPEC = CollectorSpec(name="prometheus", at="load", options=PrometheusOptions, create=_create,
                     add_flags=_add_flags, from_args=_from_args, stop_timeout_s=30.0,
                     title="prometheus collector (the service's /metrics)")
