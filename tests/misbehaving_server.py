"""An HTTP target that misbehaves on purpose: the faults the harness must survive.

Raw sockets (not http.server) so it can do what no well-behaved server does. Each request
that is not a control path takes the next behaviour of ``--pattern`` (round robin):

- ``ok``: 200 with a JSON body and a well-formed ``Server-Timing``, keep-alive;
- ``hang``: accepts and reads the request, then never answers (the socket stays open);
- ``garbage``: answers bytes that are not HTTP, then closes;
- ``close``: closes the connection without a byte;
- ``reset``: closes with an RST (SO_LINGER 0);
- ``badst``: 200 with a malformed ``Server-Timing`` (non-numeric, negative, inf, empty names).

``GET /v1/models`` and ``/healthz`` always answer ``ok``. ``--die-after S`` makes the process
exit S seconds after the first request (a target dying mid-run). Every request is counted by
behaviour in ``--log`` (a JSON object rewritten as it goes), the truth to check the harness
against.

Run it::

    python tests/misbehaving_server.py --port 0 --print-port --pattern ok,ok,hang,garbage
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

BEHAVIOURS = ("ok", "hang", "garbage", "close", "reset", "badst")
OK_ST = "fetch;dur=0.010, infer;dur=0.020, serialize;dur=0.005, app;dur=0.040"
BAD_ST = 'fetch;dur=abc, infer;dur=-5, ;;dur=1, serialize;dur=1e999, app;dur="4", app;dur'
BODY = b'{"model":"fraud","version":"v1","predictions":[{"probability":0.5,"label":1}]}'


class MisbehavingServer:
    def __init__(self, pattern: list[str], die_after_s: float | None = None,
                 log: Path | None = None, port: int = 0) -> None:
        bad = [b for b in pattern if b not in BEHAVIOURS]
        if not pattern or bad:
            raise ValueError(f"pattern must be a list of {BEHAVIOURS} (got {pattern!r})")
        if die_after_s is not None and die_after_s <= 0:
            raise ValueError(f"die_after_s must be > 0 (got {die_after_s!r})")
        self.pattern = pattern
        self.die_after_s = die_after_s
        self.log = log
        self.counts = {b: 0 for b in BEHAVIOURS}
        self.lock = threading.Lock()
        self.n = 0
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
                control = path.startswith(("/v1/models?", "/healthz")) or path == "/v1/models"
                if not self._answer(conn, "ok" if control else self._next()):
                    return
        except OSError:
            return
        finally:
            if conn not in self.hung:
                conn.close()

    def _answer(self, conn: socket.socket, behaviour: str) -> bool:
        """Act out one behaviour; False when the connection is finished."""
        if behaviour in ("ok", "badst"):
            st = OK_ST if behaviour == "ok" else BAD_ST
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nServer-Timing: %s\r\n\r\n%s"
                         % (len(BODY), st.encode(), BODY))
            return True
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
    a = p.parse_args(argv)
    try:
        server = MisbehavingServer(a.pattern.split(","), a.die_after, a.log, a.port)
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
