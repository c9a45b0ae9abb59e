"""An OTLP trace receiver: OTLP/gRPC on one port, OTLP/HTTP (protobuf and JSON) on the next.

The conventional ports are 4317 (gRPC) and 4318 (HTTP); the receiver takes a free pair on
127.0.0.1 unless told where to listen, so a service can be configured before the run.
Payloads are decoded with the official protocol definitions (``opentelemetry-proto``) and
kept in a :class:`~harness.run.collectors.traces.spans.SpanStore`.

Everything that arrives is bounded: a request body over ``max_body`` bytes is refused
(gRPC: RESOURCE_EXHAUSTED; HTTP: 413), a payload that does not decode is answered 400 /
INVALID_ARGUMENT and counted, and the store caps the spans it keeps. Received payloads can
also be forwarded, as they came, to the user's own collector (``forward_url``: OTLP/HTTP),
from a bounded queue on a thread of its own, so a slow collector never slows the receiver.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import threading
import time
import urllib.request
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The harness starts processes (the load driver, py-spy) while the receiver runs; each is
# exec'd at once, so gRPC's fork handlers have nothing to protect, and with them on every
# start printed "Other threads are currently calling into gRPC, skipping fork() handlers".
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from harness.run.collectors.traces.listen import parse_listen
from harness.run.collectors.traces.spans import SpanStore, decode_request
from harness.rundir import clock

__all__ = ["MAX_BODY", "OtlpReceiver", "ReceiverError", "parse_listen"]

MAX_BODY = 16 * 2**20
_FORWARD_QUEUE = 256


class ReceiverError(ValueError):
    """The receiver cannot listen where it was asked (the message names the address)."""


def _free_pair(host: str) -> int:
    """A port p with p and p+1 both free on ``host`` (gRPC, HTTP)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind((host, port + 1))
                except OSError:
                    continue
            return int(port)
    raise ReceiverError(f"no two adjacent free ports on {host} for the OTLP receiver")


def _hex_ids_to_base64(doc: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    for rs in doc.get("resourceSpans") or []:
        for ss in rs.get("scopeSpans") or []:
            for span in ss.get("spans") or []:
                for items in (span, *(span.get("links") or [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        value = items.get(key)
                        if isinstance(value, str) and value:
                            items[key] = base64.b64encode(bytes.fromhex(value)).decode()


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC name
        cpu = time.thread_time()
        self.receiver.accept(request, request.ByteSize(), raw=None)
        self.receiver.cpu_s += time.thread_time() - cpu
        return trace_service_pb2.ExportTraceServiceResponse()


class _HttpHandler(BaseHTTPRequestHandler):
    receiver: OtlpReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # a receiver under load must not print
        pass

    def _answer(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        cpu = time.thread_time()
        try:
            self._post()
        finally:
            self.receiver.cpu_s += time.thread_time() - cpu

    def _post(self) -> None:
        if self.path.split("?")[0].rstrip("/") != "/v1/traces":
            self._answer(404, b'{"error": "only /v1/traces is served"}')
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._answer(411, b'{"error": "Content-Length required"}')
            return
        if not 0 <= length <= self.receiver.max_body:
            self.receiver.store.malformed()
            self.close_connection = True
            if length <= 4 * self.receiver.max_body:
                # Read what the client is sending (bounded) so it gets the 413 instead of a
                # connection reset mid-send; beyond that the connection is simply closed.
                left = length
                while left > 0 and (chunk := self.rfile.read(min(65536, left))):
                    left -= len(chunk)
            self._answer(413, b'{"error": "body too large"}')
            return
        body = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            request = self.receiver.decode_http(body, ctype,
                                                self.headers.get("Content-Encoding") or "")
        except ValueError as exc:
            self.receiver.store.malformed(len(body))
            self._answer(400, json.dumps({"error": str(exc)[:200]}).encode())
            return
        self.receiver.accept(request, len(body), raw=body if ctype != "application/json"
                             else None)
        if ctype == "application/json":
            self._answer(200, b"{}")
        else:
            self._answer(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                         "application/x-protobuf")


class OtlpReceiver:
    """OTLP/gRPC on ``port``, OTLP/HTTP on ``port + 1``; ``port=0`` takes a free pair."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 store: SpanStore | None = None, max_body: int = MAX_BODY,
                 forward_url: str | None = None) -> None:
        self.host = host
        self.port = port
        self.store = store or SpanStore()
        self.max_body = max_body
        self.forward_url = _forward_endpoint(forward_url) if forward_url else None
        self.forwarded = self.forward_failed = self.forward_dropped = 0
        #: CPU seconds spent reading, decoding and storing payloads (the handler threads')
        self.cpu_s = 0.0
        self._grpc: Any = None
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._forward_q: queue.Queue[bytes | None] = queue.Queue(_FORWARD_QUEUE)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        port = self.port or _free_pair(self.host)
        handler = type("Handler", (_HttpHandler,), {"receiver": self})
        try:
            self._http = ThreadingHTTPServer((self.host, port + 1), handler)
        except OSError as exc:
            raise ReceiverError(f"the OTLP/HTTP receiver cannot listen on {self.host}:{port + 1}"
                                f" ({exc.strerror or exc})") from None
        self._http.daemon_threads = True
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[
            ("grpc.max_receive_message_length", self.max_body), ("grpc.so_reuseport", 0)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), server)
        try:
            bound = server.add_insecure_port(f"{self._bracket(self.host)}:{port}")
        except RuntimeError:
            bound = 0
        if bound != port:
            self._http.server_close()
            raise ReceiverError(f"the OTLP/gRPC receiver cannot listen on {self.host}:{port} "
                                "(address in use?)")
        server.start()
        self._grpc, self.port = server, port
        self._spawn(self._http.serve_forever, "otlp-http")
        if self.forward_url:
            self._spawn(self._forward_loop, "otlp-forward")
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(2.0)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self.forward_url:
            try:
                self._forward_q.put(None, timeout=1.0)
            except queue.Full:
                pass
        for t in self._threads:
            t.join(timeout=3.0)
        self._threads.clear()

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @staticmethod
    def _bracket(host: str) -> str:
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self._bracket(self.host)}:{self.port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self._bracket(self.host)}:{self.port + 1}"

    # -- payloads ----------------------------------------------------------------------
    def decode_http(self, body: bytes, ctype: str, encoding: str) -> Any:
        """An ExportTraceServiceRequest from an OTLP/HTTP body; ValueError saying why not."""
        encoding = encoding.strip().lower()
        try:
            if encoding == "gzip":
                body = _bounded_gunzip(body, self.max_body)
            elif encoding == "deflate":
                body = zlib.decompress(body, bufsize=self.max_body)[: self.max_body]
            elif encoding not in ("", "identity"):
                raise ValueError(f"unsupported Content-Encoding {encoding!r}")
            request = trace_service_pb2.ExportTraceServiceRequest()
            if ctype == "application/json":
                doc = json.loads(body)
                if not isinstance(doc, dict):
                    raise ValueError("OTLP/JSON must be an object")
                _hex_ids_to_base64(doc)
                json_format.ParseDict(doc, request, ignore_unknown_fields=True)
            elif ctype in ("application/x-protobuf", "application/protobuf"):
                request.ParseFromString(body)
            else:
                raise ValueError(f"unsupported Content-Type {ctype!r} (OTLP/HTTP sends "
                                 "application/x-protobuf or application/json)")
        except ValueError:
            raise
        except Exception as exc:  # protobuf's DecodeError, zlib.error, bad hex ...
            raise ValueError(f"undecodable OTLP payload: {type(exc).__name__}: {exc}") from None
        return request

    def accept(self, request: Any, size: int, raw: bytes | None) -> None:
        spans, unusable = decode_request(request)
        self.store.add(spans, unusable, size, arrival=clock.now())
        if self.forward_url:
            payload = raw if raw is not None else request.SerializeToString()
            try:
                self._forward_q.put_nowait(payload)
            except queue.Full:
                self.forward_dropped += 1

    def _forward_loop(self) -> None:
        assert self.forward_url is not None
        while (payload := self._forward_q.get()) is not None:
            req = urllib.request.Request(self.forward_url, data=payload, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
            try:
                with urllib.request.urlopen(req, timeout=5.0) as resp:  # noqa: S310
                    resp.read(65536)
                self.forwarded += 1
            except Exception:  # noqa: BLE001 - the user's collector is not ours to fail on
                self.forward_failed += 1

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        out = {"grpc_endpoint": self.grpc_endpoint, "http_endpoint": self.http_endpoint,
               **counts, "cpu_s": round(self.cpu_s, 4),
               "cpu_us_per_span": round(1e6 * self.cpu_s / counts["spans"], 2)
               if counts["spans"] else None}
        if self.forward_url:
            out["forward"] = {"url": self.forward_url, "forwarded": self.forwarded,
                              "failed": self.forward_failed, "dropped": self.forward_dropped}
        return out


def _bounded_gunzip(body: bytes, limit: int) -> bytes:
    """gunzip at most ``limit`` bytes (a small bomb must not expand into gigabytes)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(body, limit)
    if d.unconsumed_tail:
        raise ValueError(f"gzip body expands beyond {limit} bytes")
    return out


def _forward_endpoint(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--traces-forward must be an http(s) URL of an OTLP/HTTP collector "
                         f"(got {url!r})")
    return url if url.rstrip("/").endswith("/v1/traces") else url.rstrip("/") + "/v1/traces"

