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

__all__ = ["DEFAULT_REQUESTS", "calibrate"]

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


def _measure(session_cls: type, url: str, n: int) -> dict[str, Any]:
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
    for _ in range(n + 10):  # the first 10 open the connection and warm the path: dropped
        session.request("POST", "/calibrate", json=_BODY, name="calibrate")
    kept = sorted(samples[10:])
    if not kept:
        return {"requests": 0}
    return {"requests": len(kept), "p50_us": round(statistics.median(kept), 1),
            "p90_us": round(kept[int(0.9 * (len(kept) - 1))], 1),
            "mean_us": round(statistics.fmean(kept), 1)}


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
        by_client = {name: _measure(cls, url, requests) for name, cls in sessions.items()}
    except Exception as exc:  # a calibration must never stop the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        echo.kill()
        echo.wait(timeout=5)
    usable = [v for v in by_client.values() if v.get("requests")]
    worst = max(usable, key=lambda v: v["p50_us"]) if usable else {}
    return {"method": "local echo (harness/load/echo.py), sequential requests through the "
                      "locustfile's HTTP client; client latency minus the echo's own time",
            "by_client": by_client, **{k: worst.get(k) for k in ("p50_us", "p90_us",
                                                                 "mean_us")}}
