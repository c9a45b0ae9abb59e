"""The driver's name resolver: IP literals answered at once, names in gevent's threadpool.

Locust's FastHttpUser (geventhttpclient) calls ``getaddrinfo`` for every connection it
opens, and gevent's default resolver sends each call to a thread of its threadpool, IP
literals included. A service that closes every connection (gunicorn's sync workers, the
reference service) makes that once per request. Measured on the 2-core VM
(BENCHMARKS.md, "the resolver, and the target met"): ``getaddrinfo("127.0.0.1", ...)``
cost 56 µs of CPU through the threadpool against 2.9 µs called directly; py-spy on the
driver at ~1700 req/s put 133 µs of each request in the threadpool's worker (its
``Queue.get``, the hub's wake-ups), 95 µs under bare Locust: more than the harness's whole
per-request path.

An IP literal needs no DNS: the C library parses it, so answering it in the calling
greenlet blocks nothing. Any other name still goes to the threadpool, since a real DNS
lookup in the hub would stall every user for its duration. ``GEVENT_RESOLVER`` set by the
user wins (``install``).
"""

from __future__ import annotations

import _socket  # the C module: gevent's monkey-patching leaves it alone
import ipaddress
import os
from typing import Any

from gevent.resolver.thread import Resolver as _ThreadResolver

__all__ = ["LiteralFirstResolver", "install", "is_ip_literal"]

_LITERALS: dict[Any, bool] = {}
_MAX_CACHED = 1024


def is_ip_literal(host: Any) -> bool:
    """True for an IPv4 or IPv6 address written out (``127.0.0.1``, ``::1``, as str or
    bytes), False for a name (``localhost``) or anything else; cached per host."""
    got = _LITERALS.get(host)
    if got is None:
        text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
        try:
            ipaddress.ip_address(text.split("%", 1)[0] if isinstance(text, str) else text)
            got = True
        except ValueError:
            got = False
        if len(_LITERALS) < _MAX_CACHED:
            _LITERALS[host] = got
    return got


class LiteralFirstResolver(_ThreadResolver):  # type: ignore[misc]
    """gevent's thread resolver, except that ``getaddrinfo`` of an IP literal is answered by
    the C library in the calling greenlet (no DNS, nothing to wait for)."""

    def getaddrinfo(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if is_ip_literal(host):
            return _socket.getaddrinfo(host, *args, **kwargs)
        return super().getaddrinfo(host, *args, **kwargs)


def install() -> bool:
    """Make ``LiteralFirstResolver`` gevent's resolver in this process unless the user chose
    one with ``GEVENT_RESOLVER``; True when installed. Call before the first lookup."""
    if os.environ.get("GEVENT_RESOLVER"):
        return False
    import gevent

    gevent.config.resolver = LiteralFirstResolver
    return True
