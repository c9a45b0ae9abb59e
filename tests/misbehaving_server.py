"""An HTTP target that misbehaves on purpose: the faults the harness must survive.

Raw sockets (not http.server) so it can do what no well-behaved server does. Each request
that is not a control path takes the next behaviour of ``--pattern`` (round robin):

- ``ok``: 200 with a JSON body and a well-formed ``Server-Timing``, keep-alive;
- ``hang``: accepts and reads the request, then never answers (the socket stays open);
- ``garbage``: answers bytes that are not HTTP, then closes;
- ``close``: closes the connection without a byte;
- ``reset``: closes with an RST (SO_LINGER 0);
- ``badst``: 200 with a malformed ``Server-Timing`` (non-numeric, negative, inf, empty names);
- ``badstatus``: a status line that is not one (``HTTP/1.1 abc OK``), then closes;
- ``bighead``: 200 with one header of 70 KiB (over the usual 64 KiB line limits);
- ``hugehead``: 200 with one header of 1 MiB; ``hugebody``: 200 with a 17 MiB body;
- ``redirect``: 302 to ``/redirect-loop``, which redirects to itself forever (a loop; its
  hops are not counted as requests);
- ``trickle``: a 200 whose head and body come one byte a second;
- ``http500``: 500 with a JSON error body;
- ``stnames``: 200 with 20 Server-Timing names never sent before (series without bound);
- ``sthuge``: 200 with one Server-Timing header of 5,000 entries;
- ``stoverflow``: 200 with ``Server-Timing: x;dur=1e308, app;dur=0.040``.

``GET /v1/models`` and ``/healthz`` always answer ``ok`` (``--models trickle`` makes
``/v1/models`` trickle, ``--models shape`` answer JSON of an unexpected shape);
``GET /metrics`` answers a small exposition, or with ``--metrics trickle|huge|cut`` one
that trickles a byte a second, is 64 MiB, or announces 1 MiB and closes after 1 KiB.
``--die-after S`` makes the process exit S seconds after the first request (a target dying
mid-run). Every request is counted by behaviour in ``--log`` (a JSON object rewritten as it
goes), the truth to check the harness against.

Run it::

    python tests/misbehaving_server.py --port 0 --print-port --pattern ok,ok,hang,garbage
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

BEHAVIOURS = ("ok", "hang", "garbage", "close", "reset", "badst", "badstatus", "bighead",
              "hugehead", "hugebody", "redirect", "trickle", "http500", "stnames", "sthuge",
              "stoverflow")
METRICS_MODES = ("ok", "trickle", "huge", "cut", "none")
MODELS_MODES = ("ok", "trickle", "shape")
OK_ST = "fetch;dur=0.010, infer;dur=0.020, serialize;dur=0.005, app;dur=0.040"
BAD_ST = 'fetch;dur=abc, infer;dur=-5, ;;dur=1, serialize;dur=1e999, app;dur="4", app;dur'
BODY = b'{"model":"fraud","version":"v1","predictions":[{"probability":0.5,"label":1}]}'
MODELS = b'{"models":{"fraud":{"versions":["v1"],"default_version":"v1"}}}'
METRICS = b"# HELP up 1 if up\n# TYPE up gauge\nup 1\n"


def _response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class MisbehavingServer:
    def __init__(self, pattern: list[str], die_after_s: float | None = None,
                 log: Path | None = None, port: int = 0, metrics: str = "ok",
                 models: str = "ok") -> None:
        bad = [b for b in pattern if b not in BEHAVIOURS]
        if not pattern or bad:
            raise ValueError(f"pattern must be a list of {BEHAVIOURS} (got {pattern!r})")
        if die_after_s is not None and die_after_s <= 0:
            raise ValueError(f"die_after_s must be > 0 (got {die_after_s!r})")
        if metrics not in METRICS_MODES:
            raise ValueError(f"metrics must be one of {METRICS_MODES} (got {metrics!r})")
        if models not in MODELS_MODES:
            raise ValueError(f"models must be one of {MODELS_MODES} (got {models!r})")
        self.pattern = pattern
        self.die_after_s = die_after_s
        self.log = log
        self.metrics, self.models = metrics, models
        self.counts = {b: 0 for b in pattern}  # the behaviours asked for, each counted
        self.lock = threading.Lock()
        self.n = 0
        self.names = itertools.count()
        self.first: float | None = None
        self.hung: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", port), backlog=256)
        self.port: int = self.sock.getsockname()[1]

    def serve_forever(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _next(self) -> str:
        with self.lock:
            if self.first is None:
                self.first = time.monotonic()
                if self.die_after_s is not None:
                    threading.Timer(self.die_after_s, os._exit, args=(0,)).start()
            behaviour = self.pattern[self.n % len(self.pattern)]
            self.n += 1
            self.counts[behaviour] += 1
            if self.log is not None:
                tmp = self.log.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.counts))
                tmp.replace(self.log)
            return behaviour

    def _connection(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[length:]
                if not self._route(conn, path):
                    return
        except OSError:
            return
        finally:
            if conn not in self.hung:
                conn.close()

    def _route(self, conn: socket.socket, path: str) -> bool:
        if path.startswith("/metrics"):
            return self._metrics(conn)
        if path == "/v1/models" or path.startswith("/v1/models?"):
            if self.models == "trickle":
                self._trickle(conn, _response("200 OK", MODELS))
                return False
            body = b'{"models": "x"}' if self.models == "shape" else MODELS
            conn.sendall(_response("200 OK", body))
            return True
        if path.startswith("/redirect-loop"):
            conn.sendall(_response("302 Found", b"", "Location: /redirect-loop"))
            return True
        if path.startswith("/healthz"):
            conn.sendall(_response("200 OK", b"{}"))
            return True
        return self._answer(conn, self._next(), path)

    def _metrics(self, conn: socket.socket) -> bool:
        if self.metrics == "none":
            conn.sendall(_response("404 Not Found", b"{}"))
            return True
        if self.metrics == "trickle":
            self._trickle(conn, _response("200 OK", METRICS))
            return False
        if self.metrics == "cut":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 1048576\r\n\r\n" + (METRICS * 30)[:1024])
            return False
        if self.metrics == "huge":
            size = 64 << 20
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n" % size + METRICS)
            line = b"# padding " + b"x" * 1013 + b"\n"
            for _ in range((size - len(METRICS)) // len(line)):
                conn.sendall(line)
            return False
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(METRICS), METRICS))
        return True

    @staticmethod
    def _trickle(conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(1.0)

    def _server_timing(self, behaviour: str) -> str:
        if behaviour == "stnames":
            with self.lock:
                names = [f"s{next(self.names)}" for _ in range(20)]
            return ", ".join(f"{n};dur=0.001" for n in names) + ", app;dur=0.040"
        if behaviour == "sthuge":
            return ", ".join(f"e{i};dur=0.001" for i in range(5000))
        if behaviour == "stoverflow":
            return "x;dur=1e308, app;dur=0.040"
        return BAD_ST if behaviour == "badst" else OK_ST

    def _answer(self, conn: socket.socket, behaviour: str, path: str) -> bool:
        """Act out one behaviour; False when the connection is finished."""
        if behaviour in ("ok", "badst", "stnames", "sthuge", "stoverflow"):
            st = self._server_timing(behaviour)
            conn.sendall(_response("200 OK", BODY, f"Server-Timing: {st}"))
            return True
        if behaviour == "http500":
            conn.sendall(_response("500 Internal Server Error", b'{"error":"internal"}'))
            return True
        if behaviour in ("bighead", "hugehead"):
            size = 70 << 10 if behaviour == "bighead" else 1 << 20
            conn.sendall(_response("200 OK", BODY, "X-Big: " + "x" * size))
            return True
        if behaviour == "hugebody":
            conn.sendall(_response("200 OK", b" " * (17 << 20) + BODY))
            return True
        if behaviour == "redirect":
            conn.sendall(_response("302 Found", b"", "Location: /redirect-loop"))
            return True
        if behaviour == "badstatus":
            conn.sendall(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n")
            return False
        if behaviour == "trickle":
            self._trickle(conn, _response("200 OK", BODY, f"Server-Timing: {OK_ST}"))
            return False
        if behaviour == "hang":
            with self.lock:
                self.hung.append(conn)  # keep a reference: the peer sees an open socket
            return False
        if behaviour == "garbage":
            conn.sendall(b"\x00\xff\xfeTHIS IS NOT HTTP\r\n\r\n\x07" * 4)
            return False
        if behaviour == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False  # close / reset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--print-port", action="store_true")
    p.add_argument("--pattern", default="ok")
    p.add_argument("--die-after", type=float, default=None)
    p.add_argument("--log", type=Path, default=None)
    p.add_argument("--metrics", default="ok", help=f"one of {METRICS_MODES}")
    p.add_argument("--models", default="ok", help=f"one of {MODELS_MODES}")
    a = p.parse_args(argv)
    try:
        server = MisbehavingServer(a.pattern.split(","), a.die_after, a.log, a.port,
                                   a.metrics, a.models)
    except (ValueError, OSError) as exc:
        print(f"misbehaving_server: {exc}", file=sys.stderr)
        return 2
    if a.print_port:
        print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
