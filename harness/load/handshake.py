"""How a worker joins a master: versions, the locustfile, and the two hosts' clocks.

Before a worker connects as a Locust worker it opens a short-lived connection of its own
to the master (as Locust's ``-f -`` does to fetch a locustfile) and says ``harness_hello``
with its versions. The master answers ``harness_refused`` when the harness or Locust
versions differ (the message names both: two versions may record, merge or name series
differently, and Locust's own messages change between minor versions), else
``harness_welcome`` with what the worker needs to load the run: the locustfile (its text,
when the worker has none of its own), the locustfile's own options, the request timeout
and the scenario seed.

Clocks. Interval histograms are aligned to the master's ``load_start`` and a request
belongs to the interval in which it completed, so a worker must read the master's time.
The worker measures its offset the NTP way: it sends its clock ``t0``, the master answers
with its own clock ``t1``, the worker reads ``t2`` on the answer; ``offset = t1 - (t0 +
t2) / 2`` is known to within half the round trip ``t2 - t0``. Of ``PINGS`` exchanges the one
with the shortest round trip is taken, and a worker on another host moves its clock by
that offset (:func:`harness.rundir.clock.adopt`), so its intervals and its open-model
schedule follow the master's clock. During the run the worker checks again every
``CHECK_EVERY_S`` over its Locust connection (``harness_ping``/``harness_pong``); what is
left (drift, or an offset that moved) goes to the master with the worker's final report
and into run.json. Latencies are never computed across two clocks: each is the difference
of two readings of one worker's monotonic clock.

Import-safe (Locust and gevent are imported by :func:`join` only): the version rule and
the clock arithmetic are tested without them.
"""

from __future__ import annotations

import platform
import socket
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from harness import __version__
from harness.rundir import clock

__all__ = ["PINGS", "ClockSample", "NoAnswer", "Refused", "Welcome", "best_sample", "hello_data",
           "join", "refusal", "sample_from_pong"]

PINGS = 8  # exchanges at connect; the shortest round trip is kept
CHECK_EVERY_S = 5.0  # during the run
#: Locust's version (read without importing it: importing Locust monkey-patches the
#: standard library); its messages (spawn, heartbeat, reports) change between minors
LOCUST_VERSION = version("locust")
LOCUST_MINOR = ".".join(LOCUST_VERSION.split(".")[:2])


class Refused(RuntimeError):
    """The master refused this worker (another version)."""


class NoAnswer(RuntimeError):
    """The master did not answer (not running, wrong address, a firewall)."""


@dataclass(frozen=True)
class ClockSample:
    """One exchange: the master's clock minus ours, and the round trip (seconds)."""

    offset_s: float
    rtt_s: float

    @property
    def uncertainty_s(self) -> float:
        return self.rtt_s / 2


@dataclass
class Welcome:
    """What the master sent a worker that may join, and the clock measured on the way."""

    master_harness: str
    locustfile: dict[str, str] | None  # {"filename", "contents"} when the worker has none
    locust_args: list[str] = field(default_factory=list)
    request_timeout_s: float = 10.0
    seed: int = 1
    clock: ClockSample | None = None


def hello_data(has_locustfile: bool) -> dict[str, Any]:
    return {"harness": __version__, "locust": LOCUST_VERSION,
            "python": platform.python_version(), "host": socket.gethostname(),
            "has_locustfile": has_locustfile}


def refusal(hello: dict[str, Any]) -> str | None:
    """Why a worker that said ``hello`` may not join this master (None: it may)."""
    theirs = str(hello.get("harness"))
    if theirs != __version__:
        return (f"the master runs harness {__version__} and the worker on "
                f"{hello.get('host')!s} runs harness {theirs}: install the same harness "
                "version on every host")
    their_locust = ".".join(str(hello.get("locust")).split(".")[:2])
    if their_locust != LOCUST_MINOR:
        return (f"the master runs Locust {LOCUST_VERSION} and the worker on "
                f"{hello.get('host')!s} runs Locust {hello.get('locust')!s}: install the "
                "same Locust minor version on every host")
    return None


def sample_from_pong(data: dict[str, Any], t2: float) -> ClockSample:
    t0, t1 = float(data["t0"]), float(data["t1"])
    return ClockSample(offset_s=t1 - (t0 + t2) / 2, rtt_s=max(0.0, t2 - t0))


def best_sample(samples: list[ClockSample]) -> ClockSample | None:
    return min(samples, key=lambda s: s.rtt_s) if samples else None


def join(host: str, port: int, has_locustfile: bool, timeout_s: float) -> Welcome:
    """Say hello to the master at host:port (retrying until ``timeout_s``), then measure
    the clocks. Raises Refused with the master's reason, NoAnswer when it is silent."""
    from locust.rpc import zmqrpc

    client_id = f"{socket.gethostname()}_harness_join_{uuid.uuid4().hex}"
    conn = zmqrpc.Client(host, port, client_id)
    try:
        reply = _ask(conn, client_id, "harness_hello", hello_data(has_locustfile), timeout_s,
                     f"the master at {host}:{port} did not answer within {timeout_s:g} s "
                     "(is `harness run --workers N --remote-workers M` running there, and "
                     "is its port open to this host?)")
        if reply.type == "harness_refused":
            raise Refused(str(reply.data.get("reason")))
        welcome = Welcome(master_harness=str(reply.data.get("harness")),
                          locustfile=reply.data.get("locustfile"),
                          locust_args=list(reply.data.get("locust_args") or []),
                          request_timeout_s=float(reply.data.get("request_timeout_s", 10.0)),
                          seed=int(reply.data.get("seed", 1)))
        samples = []
        for _ in range(PINGS):
            pong = _ask(conn, client_id, "harness_ping", {"t0": clock.now()}, 5.0,
                        f"the master at {host}:{port} stopped answering")
            samples.append(sample_from_pong(pong.data, clock.now()))
        welcome.clock = best_sample(samples)
        return welcome
    finally:
        conn.close(linger=0)


def _ask(conn: Any, client_id: str, kind: str, data: dict[str, Any], timeout_s: float,
         silence: str) -> Any:
    """Send ``kind`` every second until an answer comes (zmq connects lazily: the first
    sends may go before the master listens); NoAnswer(silence) after ``timeout_s``."""
    import gevent
    from locust.rpc import Message

    def receive() -> Any:
        return conn.recv()

    waiter = gevent.spawn(receive)
    deadline = clock.now() + timeout_s
    while True:
        if kind == "harness_ping":
            data = {"t0": clock.now()}
        conn.send(Message(kind, data, client_id))
        waiter.join(timeout=min(1.0, max(0.0, deadline - clock.now())))
        if waiter.ready():
            if not waiter.successful():
                raise NoAnswer(f"{silence} ({waiter.exception})")
            msg = waiter.value
            if kind == "harness_ping" and msg.type != "harness_pong":
                waiter = gevent.spawn(receive)
                continue
            return msg
        if clock.now() >= deadline:
            waiter.kill()
            raise NoAnswer(silence)
