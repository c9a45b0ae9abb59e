"""Each request of a FastHttpUser, bounded: its time as a whole, its response's headers and
buffered body; failures named for what they are.

Locust's ``network_timeout`` bounds each socket operation, not the request: a target that
answers one byte a second never times out (a 200-byte answer takes 200 s). Its response
parser (geventhttpclient) keeps whatever the target sends, and joins header pieces by
string concatenation: a 16 MiB header took 68 s of CPU to parse, a body is buffered whole.

:func:`bound_requests` makes every FastHttpSession request of the driver:

- end within ``harness_request_deadline_s`` of its user class (``harness run
  --request-timeout``, or the class's own longer timeouts) as a whole: past it the request
  fails with ``TimeoutError`` (gevent.Timeout raising it inside the request, where
  Locust counts it like any timeout);
- fail with :class:`ResponseHeadersTooLarge` when more than :data:`MAX_HEADER_BYTES` were
  read before the response's headers completed (the header block, plus at most the rest
  of the read that ended it), and with :class:`ResponseBodyTooLarge` when more than
  :data:`MAX_BODY_BYTES` of body are buffered (a streamed body read as it comes is not
  limited): both are HTTP parse errors to Locust, counted under their own name.

HttpUser (requests) classes keep their own timeouts and limits (README, known limits).
"""

from __future__ import annotations

import functools
from typing import Any

import gevent
from geventhttpclient._parser import HTTPParseError
from geventhttpclient.response import HTTPResponse
from locust.contrib.fasthttp import FastHttpSession

__all__ = ["DEADLINE_ATTR", "MAX_BODY_BYTES", "MAX_HEADER_BYTES", "ResponseBodyTooLarge",
           "ResponseHeadersTooLarge", "bound_requests"]

#: a response's whole header block (the bytes read before the headers completed): servers
#: refuse requests with headers over 8-16 KiB; a response with more than this is not a
#: model service's answer
MAX_HEADER_BYTES = 256 * 1024
#: a response body buffered in memory, per request (each user holds one at a time)
MAX_BODY_BYTES = 16 * 1024 * 1024
#: on a user class: the whole request's deadline in seconds
DEADLINE_ATTR = "harness_request_deadline_s"
_MARK = "__harness_bounded__"


class ResponseHeadersTooLarge(HTTPParseError):
    """The response's headers passed MAX_HEADER_BYTES."""


class ResponseBodyTooLarge(HTTPParseError):
    """More than MAX_BODY_BYTES of the response's body were buffered."""


def bound_requests(classes: list[type[Any]], deadline_s: float) -> None:
    """Give each FastHttpUser class in ``classes`` a whole-request deadline (at least
    ``deadline_s``, or its own longer connect/read timeouts), and bound every FastHttp
    request and response of this process (once)."""
    for cls in classes:
        own = max(float(getattr(cls, "network_timeout", 0) or 0),
                  float(getattr(cls, "connection_timeout", 0) or 0))
        setattr(cls, DEADLINE_ATTR, max(float(deadline_s), own))
    if not getattr(FastHttpSession.request, _MARK, False):
        FastHttpSession.request = _with_deadline(FastHttpSession.request)  # type: ignore[method-assign]
    if not getattr(HTTPResponse._on_body, _MARK, False):
        _bound_response_parser()


def _with_deadline(request: Any) -> Any:
    @functools.wraps(request)
    def bounded(self: Any, *args: Any, **kwargs: Any) -> Any:
        user = getattr(self, "user", None)
        limit = getattr(type(user), DEADLINE_ATTR, None) if user is not None else None
        if not limit:
            return request(self, *args, **kwargs)
        with gevent.Timeout(limit, TimeoutError(f"no complete answer within {limit:g} s")):
            return request(self, *args, **kwargs)

    setattr(bounded, _MARK, True)
    return bounded


def _bound_response_parser() -> None:
    """Bound what one response may make the parser hold: its header block by the bytes fed
    before the headers completed (checked once per read, not per header piece: a
    per-piece check cost a Python call for every header name and value of every
    response), its buffered body by the buffer's size."""
    on_feed, on_body = HTTPResponse.feed, HTTPResponse._on_body

    def feed(self: Any, data: Any) -> None:
        if not self.headers_complete:
            size = getattr(self, "_harness_header_bytes", 0) + len(data)
            self._harness_header_bytes = size
            if size > MAX_HEADER_BYTES:
                raise ResponseHeadersTooLarge(
                    f"response headers larger than {MAX_HEADER_BYTES} bytes (cut there)")
        on_feed(self, data)

    def body(self: Any, buf: bytearray) -> None:
        if len(self._body_buffer) + len(buf) > MAX_BODY_BYTES:
            raise ResponseBodyTooLarge(
                f"response body larger than {MAX_BODY_BYTES} bytes buffered (cut there)")
        on_body(self, buf)

    for name, fn in (("feed", feed), ("_on_body", body)):
        setattr(fn, _MARK, True)
        setattr(HTTPResponse, name, fn)
