"""An HTTP/1.1 keep-alive server whose latency is known: the ground truth for the harness.

It serves every path with a delay drawn from a controllable, seeded distribution,
sends ``Server-Timing`` with configurable stage names (or omits it, or sends a malformed
one), can stall completely for a known time at known moments, and logs its own measured
service time of every request to a CSV file (the exact truth the harness is checked
against).

Run it::

    python tests/known_latency_server.py --port 0 --print-port --latency-ms 10 \\
        --log /tmp/truth.csv --stall 3:1

Distribution: ``--latency-ms`` is the constant, or the median with ``--lognormal-sigma``;
``--tail-prob P --tail-ms T`` adds a rare long tail (with probability P the delay is T).

Stalls: ``--stall AT:FOR`` (repeatable) freezes the whole server for FOR seconds starting
AT seconds after the first request (``--stall-clock start``: after the server started).
While frozen no request is started and no response is sent, like a stop-the-world pause.
``POST /_control/stall?for=S`` stalls right now (the response is sent first).

``--close`` answers every request with ``Connection: close`` and closes the connection, as
gunicorn's sync workers do (the client then opens a new connection per request).

Per-request overrides in the query string: ``delay_ms=``, ``status=``, ``st=normal|omit|
malformed``. ``/_control/health`` answers at once and is not logged.

Server-Timing: ``alpha;dur=…, beta;dur=…, app;dur=…``: the request's delay is split between
the stages by ``--split`` (fractions), each stage is the measured time of its part, and
``app`` (``--total-name``) is the measured time from handler start to the end of the last
stage. Time spent frozen in a stall is in no stage (it shows as residual, like queueing).

The log (``--log``) has one CSV row per request, flushed as it goes:
``recv_epoch,method,path,status,service_us,stall_us,sent_header,<stage>_us...,<total>_us``,
where ``service_us`` runs from the parsed request to the response's flush (taken just
before it, so no preemption after the send can stretch it past the client's time) and the stage
columns hold exactly the integer microseconds the header carried.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = ["ServerConfig", "KnownLatencyServer", "read_log", "start_subprocess"]

ST_MODES = ("normal", "omit", "malformed")


@dataclass
class ServerConfig:
    """Behaviour of the server; checked when built."""

    latency_ms: float = 10.0
    lognormal_sigma: float = 0.0
    tail_prob: float = 0.0
    tail_ms: float = 0.0
    seed: int = 1
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (at_s, for_s)
    stall_clock: str = "first-request"
    server_timing: str = "normal"
    stages: tuple[str, ...] = ("alpha", "beta")
    split: tuple[float, ...] = (0.3, 0.7)
    total_name: str = "app"
    log: Path | None = None
    close: bool = False  # close the connection after every response (gunicorn sync's way)

    def __post_init__(self) -> None:
        if not (self.latency_ms >= 0 and math.isfinite(self.latency_ms)):
            raise ValueError(f"latency_ms must be finite and >= 0 (got {self.latency_ms!r})")
        if self.lognormal_sigma < 0:
            raise ValueError(f"lognormal_sigma must be >= 0 (got {self.lognormal_sigma!r})")
        if not 0 <= self.tail_prob <= 1:
            raise ValueError(f"tail_prob must be in [0, 1] (got {self.tail_prob!r})")
        if self.tail_ms < 0:
            raise ValueError(f"tail_ms must be >= 0 (got {self.tail_ms!r})")
        if self.server_timing not in ST_MODES:
            raise ValueError(
                f"server_timing must be one of {ST_MODES} (got {self.server_timing!r})")
        if self.stall_clock not in ("first-request", "start"):
            raise ValueError(
                f"stall_clock must be first-request or start (got {self.stall_clock!r})")
        if len(self.split) != len(self.stages) or not self.stages:
            raise ValueError(f"split needs one fraction per stage (got {self.split!r} for "
                             f"{self.stages!r})")
        if any(f < 0 for f in self.split) or not math.isclose(sum(self.split), 1.0):
            raise ValueError(f"split fractions must be >= 0 and sum to 1 (got {self.split!r})")
        for at, dur in self.stalls:
            if at < 0 or dur <= 0:
                raise ValueError(f"stall must be AT>=0:FOR>0 seconds (got {at}:{dur})")


class _State:
    """Shared by all handler threads."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.lock = threading.Lock()
        self.started = time.time()
        self.clock0: float | None = self.started if config.stall_clock == "start" else None
        self.windows: list[tuple[float, float]] = []
        if self.clock0 is not None:
            self._arm(self.clock0)
        self.log_fh = open(config.log, "w", newline="") if config.log else None  # noqa: SIM115
        self.log = csv.writer(self.log_fh) if self.log_fh else None
        if self.log:
            self.log.writerow(["recv_epoch", "method", "path", "status", "service_us", "stall_us",
                               "sent_header", *(f"{s}_us" for s in config.stages),
                               f"{config.total_name or 'app'}_us"])
            self.log_fh.flush()  # type: ignore[union-attr]

    def _arm(self, t0: float) -> None:
        self.windows = sorted((t0 + at, t0 + at + dur) for at, dur in self.config.stalls)

    def first_request(self, now: float) -> None:
        if self.clock0 is None:
            with self.lock:
                if self.clock0 is None:
                    self.clock0 = now
                    self._arm(now)

    def stall_now(self, seconds: float) -> None:
        now = time.time()
        with self.lock:
            self.windows = sorted([*self.windows, (now, now + seconds)])

    def wait_stalls(self) -> float:
        """Sleep while a stall window is open; returns seconds spent frozen."""
        frozen = 0.0
        while True:
            now = time.time()
            until = next((end for start, end in self.windows if start <= now < end), None)
            if until is None:
                return frozen
            time.sleep(until - now)
            frozen += time.time() - now

    def draw_delay_s(self) -> float:
        c = self.config
        with self.lock:
            if c.tail_prob and self.rng.random() < c.tail_prob:
                return c.tail_ms / 1000.0
            if c.lognormal_sigma:
                return self.rng.lognormvariate(math.log(max(c.latency_ms, 1e-6)),
                                               c.lognormal_sigma) / 1000.0
            return c.latency_ms / 1000.0

    def write_log(self, row: list[object]) -> None:
        if self.log:
            with self.lock:
                self.log.writerow(row)
                self.log_fh.flush()  # type: ignore[union-attr]


def _sleep_measured_us(seconds: float) -> int:
    t0 = time.perf_counter()
    if seconds > 0:
        time.sleep(seconds)
    return round((time.perf_counter() - t0) * 1e6)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "known-latency/1"
    # One write per response and no Nagle: otherwise delayed ACKs add ~40 ms to
    # keep-alive responses and the "known" latency is not known any more.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    state: _State  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the CSV log is the record; stderr noise would slow the server down

    def _handle(self) -> None:
        t_start = time.perf_counter()
        recv_epoch = time.time()
        st = self.state
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/_control/health":
            self._send(200, b"ok\n", None)
            return
        if url.path == "/_control/stall":
            self._send(200, b"stalling\n", None)
            st.stall_now(float(query.get("for", "1")))
            return
        st.first_request(recv_epoch)
        try:
            status = int(query.get("status", "200"))
            delay = (float(query["delay_ms"]) / 1000.0 if "delay_ms" in query
                     else st.draw_delay_s())
            mode = query.get("st", st.config.server_timing)
            if mode not in ST_MODES or delay < 0 or not 100 <= status <= 599:
                raise ValueError(mode)
        except ValueError:
            self._send(400, b"bad query: delay_ms>=0, status 100-599, st normal|omit|malformed\n",
                       None)
            return
        stall = st.wait_stalls()
        t_app = time.perf_counter()
        stage_us = [_sleep_measured_us(delay * f) for f in st.config.split]
        app_us = round((time.perf_counter() - t_app) * 1e6)
        stall += st.wait_stalls()
        names = [*st.config.stages, st.config.total_name]
        values = [*stage_us, app_us]
        if not st.config.total_name:  # --total-name "": stages only, no total entry
            names, values = names[:-1], values[:-1]
        if mode == "normal":
            header = ", ".join(
                f"{n};dur={v / 1000:.3f}" for n, v in zip(names, values, strict=True))
        elif mode == "malformed":
            header = f"{names[0]};dur=fast, {names[1]};;dur=1"
        else:
            header = None
        t_sent = self._send(status, b'{"ok": true}\n', header)
        service_us = round((t_sent - t_start) * 1e6)
        st.write_log([f"{recv_epoch:.6f}", self.command, url.path, status, service_us,
                      round(stall * 1e6), mode, *stage_us, app_us])

    def _send(self, status: int, body: bytes, server_timing: str | None) -> float:
        """Send the response (one write: the buffer's flush); the perf_counter just before
        the flush. A timestamp taken after it can land after the client already has the
        answer when this thread is preempted in between (under two busy loops, a server
        p99 1 ms above the client's), and the log would no longer bound the client from
        below."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if server_timing is not None:
            self.send_header("Server-Timing", server_timing)
        if self.state.config.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        sent = time.perf_counter()
        self.wfile.flush()
        return sent

    do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815


class KnownLatencyServer:
    """The server in a background thread of this process (``start()`` returns the port)."""

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = _State(config)
        handler = type("Handler", (_Handler,), {"state": self.state})
        ThreadingHTTPServer.daemon_threads = True
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.port: int = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self.port

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.state.log_fh:
            self.state.log_fh.close()


def read_log(path: Path | str) -> list[dict[str, str]]:
    """The server's truth log as a list of rows (all values are strings)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def start_subprocess(args: list[str], timeout: float = 10.0) -> tuple[subprocess.Popen[str], int]:
    """Start ``known_latency_server.py ARGS --port 0 --print-port`` and return (proc, port)."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--print-port", *args],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""  # blocks until the port is printed
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"known_latency_server did not print its port (got {line!r})")
    return proc, int(line)


def _parse_stall(text: str) -> tuple[float, float]:
    at, sep, dur = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(at), float(dur)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"stall must be AT:FOR in seconds (got {text!r})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--print-port", action="store_true", help="print the bound port on stdout")
    p.add_argument("--latency-ms", type=float, default=10.0)
    p.add_argument("--lognormal-sigma", type=float, default=0.0)
    p.add_argument("--tail-prob", type=float, default=0.0)
    p.add_argument("--tail-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stall", type=_parse_stall, action="append", default=[])
    p.add_argument("--stall-clock", default="first-request", choices=["first-request", "start"])
    p.add_argument("--server-timing", default="normal", choices=ST_MODES)
    p.add_argument("--stages", default="alpha,beta")
    p.add_argument("--split", default=None, help="fractions per stage (default: 0.3,0.7 or equal)")
    p.add_argument("--total-name", default="app", help='"" sends the stages only')
    p.add_argument("--log", type=Path, default=None)
    p.add_argument("--close", action="store_true",
                   help="close the connection after every response (Connection: close)")
    a = p.parse_args(argv)
    stages = tuple(s for s in a.stages.split(",") if s)
    if a.split:
        split = tuple(float(x) for x in a.split.split(","))
    else:
        split = (0.3, 0.7) if len(stages) == 2 else tuple(1 / len(stages) for _ in stages)
    try:
        config = ServerConfig(
            latency_ms=a.latency_ms, lognormal_sigma=a.lognormal_sigma, tail_prob=a.tail_prob,
            tail_ms=a.tail_ms, seed=a.seed, stalls=a.stall, stall_clock=a.stall_clock,
            server_timing=a.server_timing, stages=stages, split=split,
            total_name=a.total_name, log=a.log, close=a.close,
        )
        server = KnownLatencyServer(config, a.host, a.port)
    except (ValueError, OSError) as exc:
        print(f"known_latency_server: {exc}", file=sys.stderr)
        return 2
    if a.print_port:
        print(server.port, flush=True)

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.serve_forever()
    if server.state.log_fh and not server.state.log_fh.closed:
        server.state.log_fh.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
