"""One GET from the target, bounded: bytes, time as a whole, and every way it can break.

``urllib``'s ``timeout`` bounds each socket operation, not the request: a target that
answers one byte a second never times out, and ``read()`` without a size keeps whatever
the target sends (512 MB of /metrics took the harness to 557 MB). A body cut mid-way
raises ``http.client.IncompleteRead``, a status line that is not one ``BadStatusLine``, a
header over 64 KiB ``LineTooLong``: none of them an ``OSError``, so each escaped the
callers' handlers as a traceback.

:func:`bounded_get` reads at most ``max_bytes``, gives up when ``deadline_s`` has passed
since it began (a timer shuts the socket down, which ends any read in progress; a socket
timeout, which can only fire after ``deadline_s``, counts as the deadline too), and turns
every failure into :class:`GetError` (a ValueError) that says which bound the target
passed or what broke. Redirects are not followed.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["GetError", "bounded_get"]

CHUNK = 64 * 1024


class GetError(ValueError):
    """The GET failed or the target passed a bound; ``bound`` names it (``bytes``,
    ``deadline``) or is None for a plain failure."""

    def __init__(self, message: str, bound: str | None = None) -> None:
        super().__init__(message)
        self.bound = bound


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise GetError(f"URL must be http(s)://host[:port]/path (got {url!r}: {exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GetError(f"URL must be http(s)://host[:port]/path (got {url!r})")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return cls(parts.hostname, port, timeout=timeout_s), path


def bounded_get(url: str, *, deadline_s: float, max_bytes: int,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of ``GET url``; GetError when it fails or passes a bound."""
    conn, path = _connection(url, deadline_s)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(deadline_s, expire)
    timer.daemon = True
    began = time.monotonic()
    timer.start()
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        body = _read(resp, max_bytes)
        if expired.is_set():  # the shut-down socket looked like the end of the body
            raise OSError("deadline")
        if resp.length:  # Content-Length promised more: http.client returns what came
            raise GetError(f"the body was cut after {len(body)} of {len(body) + resp.length} "
                           "bytes (the connection closed)")
        return resp.status, body
    except GetError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # A socket timeout is the deadline too: each operation's timeout is deadline_s, so
        # it fires only after deadline_s have passed, on a busy machine before the timer
        # thread got to run.
        if expired.is_set() or isinstance(exc, TimeoutError):
            raise GetError(f"the target did not answer within {deadline_s:g} s "
                           f"(cut after {time.monotonic() - began:.1f} s)", "deadline") from None
        raise GetError(f"{type(exc).__name__}: {exc}"[:300]) from None
    finally:
        timer.cancel()
        conn.close()


def _read(resp: http.client.HTTPResponse, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = resp.read(CHUNK)
        except http.client.IncompleteRead as exc:  # chunked transfer cut mid-chunk
            raise GetError(f"the body was cut after {size + len(exc.partial)} bytes (the "
                           "connection closed)") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise GetError(f"the body is larger than {max_bytes} bytes (cut there)", "bytes")
        chunks.append(chunk)
