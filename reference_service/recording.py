"""Recording a service's incoming traffic to the replay format (harness/replayfile.py).

A WSGI middleware, off by default, configured by environment variables:

| variable | meaning | default |
|---|---|---|
| REFSVC_RECORD_TRAFFIC | directory to record into; unset = off | off |
| REFSVC_RECORD_SAMPLE | share of requests recorded, in (0, 1] | 1 |
| REFSVC_RECORD_MAX_MB | size cap of each process's file; recording stops there | 100 |
| REFSVC_RECORD_MAX_BODY_KB | larger bodies are not kept (``body_omitted``) | 1024 |
| REFSVC_RECORD_EXCLUDE | path prefixes not recorded, comma-separated | /healthz,/readyz,… |

Each process (gunicorn worker) writes ``DIR/replay-<pid>.jsonl``; a reader merges the
directory on the absolute time axis. Header values of Authorization, Cookie, API keys,
tokens, sessions and secrets are replaced by ``[REDACTED]`` before anything is written;
Host, Content-Length and hop-by-hop headers are not kept. The default exclusions are
/healthz, /readyz, /metrics and /admin. A line is written when the
response is ready (so it carries the status); ``t`` is the arrival time.

Wiring (the app factory)::

    from reference_service.recording import wrap_from_env
    app.wsgi_app = wrap_from_env(app.wsgi_app)
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from harness.rundir.replay import (
    REDACTED,
    ReplayHeader,
    ReplayRecord,
    dumps_line,
    header_to_json,
    record_to_json,
)

__all__ = ["RecordingMiddleware", "RecordingConfig", "wrap_from_env", "redact"]

log = logging.getLogger(__name__)
SENSITIVE = re.compile(r"authorization|cookie|api[-_]?key|token|secret|session|password",
                       re.IGNORECASE)
NOT_KEPT = frozenset({"host", "content-length", "connection", "keep-alive",
                      "transfer-encoding", "te", "upgrade", "trailer", "proxy-connection"})
DEFAULT_EXCLUDE = ("/healthz", "/readyz", "/metrics", "/admin")


def redact(name: str, value: str) -> str:
    return REDACTED if SENSITIVE.search(name) else value


class RecordingConfig:
    """Checked settings; ``from_env`` raises ValueError naming the variable and value."""

    def __init__(self, directory: str | Path, sample: float = 1.0,
                 max_bytes: int = 100 << 20, max_body: int = 1 << 20,
                 exclude: Iterable[str] = DEFAULT_EXCLUDE):
        if not 0 < sample <= 1:
            raise ValueError(f"record sample must be in (0, 1] (got {sample!r})")
        if max_bytes < 1024:
            raise ValueError(f"record size cap must be >= 1024 bytes (got {max_bytes!r})")
        if max_body < 0:
            raise ValueError(f"record body cap must be >= 0 (got {max_body!r})")
        self.directory = Path(directory)
        self.sample = sample
        self.max_bytes = max_bytes
        self.max_body = max_body
        self.exclude = tuple(p for p in exclude if p)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RecordingConfig | None:
        env = os.environ if env is None else env
        directory = env.get("REFSVC_RECORD_TRAFFIC")
        if not directory:
            return None

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number (got {raw!r})") from None

        exclude = env.get("REFSVC_RECORD_EXCLUDE")
        try:
            return cls(directory, number("REFSVC_RECORD_SAMPLE", 1.0),
                       int(number("REFSVC_RECORD_MAX_MB", 100) * (1 << 20)),
                       int(number("REFSVC_RECORD_MAX_BODY_KB", 1024) * 1024),
                       DEFAULT_EXCLUDE if exclude is None else exclude.split(","))
        except ValueError as exc:
            raise ValueError(f"traffic recording (REFSVC_RECORD_*): {exc}") from None


class _Chained(io.RawIOBase):
    """A body already partly read (``head``) followed by the rest of the stream."""

    def __init__(self, head: bytes, rest: Any):
        self.head = io.BytesIO(head)
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.head.read(len(b)) or self.rest.read(len(b))
        b[:len(data)] = data
        return len(data)


class RecordingMiddleware:
    """Wraps a WSGI app; records a sample of its requests to ``replay-<pid>.jsonl``."""

    def __init__(self, app: Callable[..., Any], config: RecordingConfig):
        self.app = app
        self.config = config
        self._lock = threading.Lock()
        self._pid = -1
        self._fh: IO[str] | None = None
        self._base = 0.0
        self._written = 0
        self._stopped = False
        self._rng = random.Random()
        self.recorded = 0
        self.dropped = 0  # sampled in but not written: size cap reached or write error

    def _ensure_process(self, arrived: float) -> None:
        # A forked worker gets its own file, sampler and time base: its first arrival.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._rng = random.Random(int.from_bytes(os.urandom(8), "big"))
                    self._fh, self._written, self._stopped = None, 0, False
                    self._base = arrived
                    self._pid = os.getpid()

    def _open(self) -> IO[str] | None:
        # Called under the lock.
        if self._fh is None and not self._stopped:
            self.config.directory.mkdir(parents=True, exist_ok=True)
            path = self.config.directory / f"replay-{self._pid}.jsonl"
            self._fh = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
            line = dumps_line(header_to_json(ReplayHeader(
                self._base, f"recording middleware pid {self._pid}", self.config.sample)))
            self._fh.write(line)
            self._written = len(line.encode())
        return self._fh

    def _capture_body(self, environ: dict[str, Any]) -> tuple[bytes | None, bool, int | None]:
        """(body, omitted, size); puts an unread stream back into ``environ``."""
        stream = environ.get("wsgi.input")
        cap = self.config.max_body
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if stream is None or (length == 0 and not chunked):
            return None, False, None
        if length > cap:
            return None, True, length
        head = stream.read(length if length else cap + 1)
        if len(head) > cap:  # chunked and over the cap: pass it on untouched
            environ["wsgi.input"] = io.BufferedReader(_Chained(head, stream))
            return None, True, None
        environ["wsgi.input"] = io.BytesIO(head)
        return head, False, len(head)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        arrived = time.time()
        self._ensure_process(arrived)
        path = environ.get("PATH_INFO", "") or "/"
        if self._stopped or path.startswith(self.config.exclude) \
                or self._rng.random() >= self.config.sample:
            return self.app(environ, start_response)
        body, omitted, size = self._capture_body(environ)
        status: list[int] = []

        def recording_start_response(st: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(st.split(" ", 1)[0]))
            return start_response(st, headers, exc_info) if exc_info is not None \
                else start_response(st, headers)

        try:
            return self.app(environ, recording_start_response)
        finally:
            self._write(environ, arrived, body, omitted, size, status[-1] if status else None)

    def _write(self, environ: dict[str, Any], arrived: float, body: bytes | None,
               omitted: bool, size: int | None, status: int | None) -> None:
        target = environ.get("RAW_URI") or (
            quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
            + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else ""))
        headers = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE",) and value:
                name = "Content-Type"
            else:
                continue
            if name.lower() not in NOT_KEPT:
                headers.append((name, redact(name, str(value))))
        with self._lock:
            try:
                fh = self._open()
                if fh is None:
                    self.dropped += 1
                    return
                rec = ReplayRecord(max(0.0, arrived - self._base),
                                   environ.get("REQUEST_METHOD", "GET"), target,
                                   tuple(sorted(headers)), body, status,
                                   body_omitted=omitted, body_bytes=size if omitted else None)
                line = dumps_line(record_to_json(rec))
                n = len(line.encode())
                if self._written + n > self.config.max_bytes:
                    self._stop(f"size cap of {self.config.max_bytes} bytes reached")
                    self.dropped += 1
                    return
                fh.write(line)
                self._written += n
                self.recorded += 1
            except (OSError, ValueError) as exc:
                self.dropped += 1
                self._stop(f"write failed: {exc}")

    def _stop(self, why: str) -> None:
        if not self._stopped:
            log.warning("traffic recording stopped in pid %d: %s", os.getpid(), why)
        self._stopped = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def wrap_from_env(app: Callable[..., Any], env: Mapping[str, str] | None = None
                  ) -> Callable[..., Any]:
    """``app`` wrapped when REFSVC_RECORD_TRAFFIC is set, else ``app`` itself."""
    config = RecordingConfig.from_env(env)
    return app if config is None else RecordingMiddleware(app, config)
