"""Scrape one Prometheus endpoint every few seconds into a CSV of the run directory.

The shared loop of the ``process_metrics`` and ``node_metrics`` collectors: a thread GETs
the URL (bounded as the prometheus collector's scrapes are: ``scrape()``: a deadline for
the whole GET, 16 MiB at most), turns the exposition into one row (the caller's
``extract``), appends it to the CSV and flushes, so a run that dies keeps every row it
scraped. A failed scrape (refused, a timeout, not Prometheus text, a body over the bound)
is counted and its message kept (the first :data:`MAX_ERRORS` distinct ones); the loop goes
on. ``stop()`` writes the status JSON beside the CSV and never raises.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from harness.run.collectors.prometheus import scrape
from harness.rundir import clock, write_json_atomic
from harness.rundir.telemetry import as_row

__all__ = ["MAX_ERRORS", "ScrapeLoop", "check_every", "check_url"]

MAX_ERRORS = 20
Extract = Callable[[str], Mapping[str, float | int] | None]


def check_url(url: object, what: str) -> str:
    """``url`` when it is an http(s) URL with a host and a valid port; ValueError naming
    ``what`` (the option) and the value otherwise."""
    from urllib.parse import urlsplit

    bad = ValueError(f"{what} must be an http(s) URL such as http://host:9100/metrics "
                     f"(got {url!r})")
    if not isinstance(url, str):
        raise bad
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port out of range)
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c.isspace() for c in url):
        raise bad
    return url


def check_every(every_s: object, what: str) -> float:
    if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) \
            or not 0.25 <= every_s <= 60:
        raise ValueError(f"{what} must be between 0.25 and 60 seconds (got {every_s!r})")
    return float(every_s)


class ScrapeLoop:
    """Every ``every_s``: scrape ``url``, ``extract`` a row, append it to ``csv_path``."""

    def __init__(self, url: str, every_s: float, timeout_s: float, extract: Extract,
                 columns: tuple[str, ...], give_up: int | None = None) -> None:
        """``give_up``: stop after this many failed scrapes in a row before any answered
        (an endpoint that serves no metrics at all; None: never)."""
        self.url, self.every_s, self.timeout_s = url, every_s, timeout_s
        self.give_up = give_up
        self.gave_up = False
        self._extract, self._columns = extract, columns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._writer: Any = None
        self.scrapes = 0
        self.failed = 0
        self.empty = 0  # scrapes that answered without the samples extract looks for
        self.rows = 0
        self.errors: list[str] = []
        self.first_t: float | None = None
        self.last_t: float | None = None

    def start(self, csv_path: Path) -> None:
        csv_path.parent.mkdir(exist_ok=True)
        self._file = csv_path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self._columns)
        self._file.flush()
        self._thread = threading.Thread(target=self._loop, name=f"scrape-{csv_path.stem}",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_t = time.monotonic()
        while True:
            self.scrape_once()
            if self.give_up is not None and self.failed >= self.give_up \
                    and self.failed == self.scrapes:
                self.gave_up = True
                return
            next_t += self.every_s
            now = time.monotonic()
            if now > next_t:  # a slow scrape: skip the slots it overran
                next_t += self.every_s * int((now - next_t) / self.every_s + 1)
            if self._stop.wait(next_t - now):
                return

    def scrape_once(self) -> None:
        """One scrape; its failure is counted, never raised."""
        t = clock.now()
        self.scrapes += 1
        try:
            values = self._extract(scrape(self.url, self.timeout_s))
        except ValueError as exc:
            self.failed += 1
            self._note(f"{time.strftime('%H:%M:%S', time.localtime(t))}: {exc}")
            return
        if values is None:
            self.empty += 1
            return
        try:  # a full disk ends the rows, not the run
            assert self._writer is not None and self._file is not None
            self._writer.writerow(as_row(t, values, self._columns))
            self._file.flush()
        except (OSError, ValueError) as exc:
            self.failed += 1
            self._note(f"could not write a row: {exc}")
            return
        self.rows += 1
        self.first_t = self.first_t if self.first_t is not None else t
        self.last_t = t

    def _note(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message[:300])

    def finish(self) -> None:
        """Stop the thread (one scrape's deadline at most) and close the CSV."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass

    def counts(self) -> dict[str, Any]:
        return {"url": self.url, "every_s": self.every_s, "scrapes": self.scrapes,
                "failed_scrapes": self.failed, "rows": self.rows, "errors": list(self.errors),
                "gave_up": self.gave_up,
                "first_t": self.first_t, "last_t": self.last_t}


def write_status(path: Path, status: Mapping[str, Any]) -> None:
    """The status JSON beside the CSV; a full disk leaves run.json to carry it."""
    try:
        write_json_atomic(path, dict(status))
    except OSError:
        pass
