"""The load generator's own time per request, measured at the start of every run.

Client latency minus the service's own time (the residual) holds queueing in front of the
service, the network and the server's HTTP layer, and also the load generator's own work:
building and sending the request, reading and parsing the response, Locust's event. To
tell that last part apart, the driver sends ``requests`` sequential requests, through the
same HTTP client class the locustfile's users use (``HttpSession`` for HttpUser,
``FastHttpSession`` for FastHttpUser), to a local echo of known handling time
(harness/load/echo.py, a process of its own on 127.0.0.1) before the load starts. The
client latency minus the echo's own Server-Timing is the client path's time per request on
this machine, now: the harness's share of every residual (with some tens of µs of
loopback). The calibration's requests fire a private event hook, so they reach no
histogram; they carry no trace context either (``--traces`` is installed after).

Twice per client class: on one kept-alive connection, and with a new connection for every
request (connect, and close after the response). A server that closes every connection
(gunicorn's sync workers send ``Connection: close``) makes the client pay the second; the
run counts the responses that closed their connection (``connections`` in
``client_overhead``), and the summary charges each kind its own cost.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

from locust.clients import HttpSession
from locust.contrib.fasthttp import FastHttpSession, FastHttpUser
from locust.event import EventHook
from locust.user import HttpUser

from harness.load.servertiming import ServerTimingError, parse_server_timing

__all__ = ["DEFAULT_REQUESTS", "calibrate", "merge_connections", "with_connections"]

DEFAULT_REQUESTS = 200
_BODY = {"instances": [{"entity_id": 7, "features": {"amount": 12.5}}]}


def _sessions(classes: list[type]) -> dict[str, type]:
    found: dict[str, type] = {}
    for cls in classes:
        if issubclass(cls, FastHttpUser):
            found.setdefault("FastHttpSession", FastHttpSession)
        elif issubclass(cls, HttpUser):
            found.setdefault("HttpSession", HttpSession)
    return found


def _stats(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    if not ordered:
        return {"requests": 0}
    return {"requests": len(ordered), "p50_us": round(statistics.median(ordered), 1),
            "p90_us": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "mean_us": round(statistics.fmean(ordered), 1)}


def _measure(session_cls: type, url: str, n: int, new_connection: bool) -> dict[str, Any]:
    """``n`` sequential requests on one kept-alive connection, or (``new_connection``) each
    on a connection of its own: the request asks the echo to close it, as a server that
    closes every connection (gunicorn's sync workers) makes the client reconnect."""
    hook = EventHook()
    samples: list[float] = []

    def on_request(response_time: float, response: Any = None, exception: Any = None,
                   **_kw: Any) -> None:
        if exception is not None or response is None:
            return
        try:
            echo_ms = parse_server_timing(response.headers.get("Server-Timing") or "")["echo"]
        except (ServerTimingError, KeyError):
            return
        samples.append(max(0.0, (response_time - echo_ms) * 1000.0))

    hook.add_listener(on_request)
    session = session_cls(base_url=url, request_event=hook, user=None)
    headers = {"Connection": "close"} if new_connection else None
    try:
        for _ in range(n + 10):  # the first 10 open the connection and warm the path: dropped
            session.request("POST", "/calibrate", json=_BODY, name="calibrate",
                            headers=headers)
    finally:
        _close(session)  # not left to the garbage collector: the next measurement is clean
    return _stats(samples[10:])


def _close(session: Any) -> None:
    client = getattr(session, "client", None)  # FastHttpSession: geventhttpclient's pool
    closer = getattr(client if client is not None else session, "close", None)
    if callable(closer):
        closer()


def _both(session_cls: type, url: str, n: int) -> dict[str, Any]:
    kept = _measure(session_cls, url, n, new_connection=False)
    if kept.get("requests"):
        kept["new_connection"] = _measure(session_cls, url, n, new_connection=True)
    return kept


def calibrate(classes: list[type], requests: int = DEFAULT_REQUESTS) -> dict[str, Any] | None:
    """Per HTTP client class the locustfile uses: the client path's own time (µs). None
    when there is nothing to calibrate (no HTTP user class, or ``requests`` is 0)."""
    sessions = _sessions(classes)
    if not sessions or requests <= 0:
        return None
    echo = subprocess.Popen([sys.executable, "-m", "harness.load.echo"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert echo.stdout is not None
        port = echo.stdout.readline().strip()
        if not port.isdigit():
            return {"error": "the local echo did not start"}
        url = f"http://127.0.0.1:{port}"
        by_client = {name: _both(cls, url, requests) for name, cls in sessions.items()}
    except Exception as exc:  # a calibration must never stop the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        echo.kill()
        echo.wait(timeout=5)
    usable = [v for v in by_client.values() if v.get("requests")]
    worst = max(usable, key=lambda v: v["p50_us"]) if usable else {}
    fresh = worst.get("new_connection") or {}
    return {"method": "local echo (harness/load/echo.py), sequential requests through the "
                      "locustfile's HTTP client, on a kept-alive connection and on a new "
                      "connection each; client latency minus the echo's own time",
            "by_client": by_client, **{k: worst.get(k) for k in ("p50_us", "p90_us",
                                                                 "mean_us")},
            "new_connection": ({k: fresh.get(k) for k in ("p50_us", "p90_us", "mean_us")}
                               if fresh.get("requests") else None)}


def with_connections(overhead: dict[str, Any] | None, connections: list[int]
                     ) -> dict[str, Any] | None:
    """The calibration with the run's count of successful responses and of those that
    closed their connection (``Connection: close``)."""
    if not overhead:
        return overhead
    return {**overhead, "connections": {"responses": connections[0], "closed": connections[1]}}


def merge_connections(overheads: list[dict[str, Any]]) -> dict[str, int] | None:
    """The workers' counts of responses and closed connections, summed."""
    counts = [o["connections"] for o in overheads if isinstance(o.get("connections"), dict)]
    if not counts:
        return None
    return {k: sum(int(c.get(k) or 0) for c in counts) for k in ("responses", "closed")}
