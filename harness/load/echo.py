"""A local HTTP echo of known handling time: the yardstick of the load generator's own time.

The residual (client latency minus the service's own time) mixes what happens outside
the service: the load generator building, sending and parsing the request, the kernel's
loopback, the server's HTTP layer and its queue. To tell the load generator's share apart,
the driver sends a few hundred requests, through the same HTTP client the locustfile uses,
to this echo before the load starts: it answers every request at once with a fixed body and
``Server-Timing: echo;dur=<its own handling time>``, measured around the work it does
(microseconds). Client latency minus that is the load generator's own time per request
(plus loopback, some tens of µs), measured on this machine in this run.

Runs as ``python -m harness.load.echo`` (prints ``PORT\\n`` when listening), in a process of
its own so the driver's event loop is the only thing the measurement shares with the load.
One thread, every open connection watched (``selectors``): the calibration's requests are
sequential, but a client's idle kept-alive connection (a session whose pool outlives it)
must not hold the next one up, and a thread per connection would add its start to every
new connection's time.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time

__all__ = ["BODY", "serve"]

BODY = b'{"ok":true}'
MAX_HEADER = 65536


def _read_request(conn: socket.socket, buf: bytes) -> tuple[bytes | None, bytes]:
    """One request's bytes (head + Content-Length body) from ``buf`` + the socket."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEADER:
            return None, b""
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or b"0")
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head, rest[length:]


def _answer(conn: socket.socket, buf: bytes) -> bytes | None:
    """Answer one request on ``conn`` (readable); the bytes left over, or None when the
    connection is done (closed by the client, or a request that asked to close it)."""
    head, buf = _read_request(conn, buf)
    t0 = time.perf_counter_ns()
    if head is None:
        return None
    keep = b"connection: close" not in head.lower()
    dur_ms = (time.perf_counter_ns() - t0) / 1e6
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
             b"Server-Timing: echo;dur=" + f"{dur_ms:.3f}".encode() + b"\r\n"
             + (b"" if keep else b"Connection: close\r\n") + b"\r\n" + BODY)
    conn.sendall(reply)
    return buf if keep else None


def serve(host: str = "127.0.0.1", port: int = 0, *, ready: bool = True) -> None:
    """Serve until killed; prints the port on stdout once listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv, \
            selectors.DefaultSelector() as sel:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(16)
        sel.register(srv, selectors.EVENT_READ)
        pending: dict[socket.socket, bytes] = {}
        if ready:
            print(srv.getsockname()[1], flush=True)
        while True:
            for key, _ in sel.select():
                if key.fileobj is srv:
                    conn, _ = srv.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(conn, selectors.EVENT_READ)
                    pending[conn] = b""
                    continue
                conn = key.fileobj  # type: ignore[assignment]
                try:
                    left = _answer(conn, pending[conn])
                    while left and b"\r\n\r\n" in left:  # pipelined: already read
                        left = _answer(conn, left)
                except (OSError, ValueError):
                    left = None  # a client gone mid-request; the others are served
                if left is None:
                    sel.unregister(conn)
                    del pending[conn]
                    conn.close()
                else:
                    pending[conn] = left


if __name__ == "__main__":
    serve(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
