"""A deadline on receiving each request, so slow clients cannot hold every sync worker.

A gunicorn sync worker reads a request with a blocking socket and no timeout: a client that
sends its headers a byte at a time (slowloris) holds the worker until gunicorn's ``timeout``
kills it (60 s here), and two such clients silence a two-worker service, health checks
included. ``install(worker)`` (called from gunicorn's ``post_fork``) wraps every accepted
connection of a sync worker so that the whole request, headers and body, must arrive within
``REFSVC_READ_DEADLINE_S`` seconds (default 10) of the accept; a client that is slower is
disconnected and logged. Responses are written without that deadline.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any

DEFAULT_DEADLINE_S = 10.0


def read_deadline_s() -> float:
    raw = os.environ.get("REFSVC_READ_DEADLINE_S", "")
    try:
        value = float(raw) if raw else DEFAULT_DEADLINE_S
    except ValueError:
        raise ValueError(f"REFSVC_READ_DEADLINE_S must be a number of seconds (got {raw!r})") \
            from None
    if not 0 < value <= 3600:
        raise ValueError(f"REFSVC_READ_DEADLINE_S must be > 0 and <= 3600 (got {value!r})")
    return value


class DeadlineSocket:
    """A client socket whose reads must all finish by one deadline; the rest is delegated."""

    def __init__(self, sock: socket.socket, deadline_s: float, log: Any) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + deadline_s
        self._deadline_s = deadline_s
        self._log = log

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            self._expired()
        self._sock.settimeout(left)

    def _expired(self) -> None:
        self._log.warning("slow client: request not received within %.1f s; connection closed",
                          self._deadline_s)
        # ENOTCONN: gunicorn's sync worker then drops the connection without a traceback.
        raise OSError(errno.ENOTCONN, "request not received before the read deadline")

    def recv(self, *args: Any) -> bytes:
        self._arm()
        try:
            return self._sock.recv(*args)
        except TimeoutError:
            self._expired()
            raise  # unreachable: _expired raises
        finally:
            self._sock.settimeout(None)

    def recv_into(self, *args: Any) -> int:
        self._arm()
        try:
            return self._sock.recv_into(*args)
        except TimeoutError:
            self._expired()
            raise
        finally:
            self._sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def install(worker: Any) -> None:
    """Make a gunicorn sync worker wrap each accepted connection in a DeadlineSocket."""
    from gunicorn import util
    from gunicorn.workers.sync import SyncWorker

    if not isinstance(worker, SyncWorker):
        return  # gthread reads requests on its own poller and threads
    deadline = read_deadline_s()

    def accept(listener: Any) -> None:
        client, addr = listener.accept()
        client.setblocking(1)
        util.close_on_exec(client)
        worker.handle(listener, DeadlineSocket(client, deadline, worker.log), addr)

    worker.accept = accept
