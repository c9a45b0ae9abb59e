"""A model server's side endpoints, shaped as MLServer 1.7 answers them, and its hostile
variants: what the harness reads before and around a run (model versions, metrics).

``--mode``:

- ``v2``: no ``/v1/models`` (404) and no ``/metrics`` (404) on the main port;
  ``POST /v2/repository/index`` lists two models, ``GET /v2/models/rf`` its metadata (MLServer
  answers ``"versions": []``; this one lists two); the Prometheus text is on a second port,
  as MLServer's ``metrics_port``;
- ``v1``: ``GET /v1/models`` as the reference service answers it (and the V2 endpoints too:
  /v1 wins);
- ``slow``: every request waits 30 s before answering;
- ``drip``: answers 200 with a JSON body one byte every 0.5 s, forever;
- ``huge``: every answer is 2 MB of JSON.

Prints ``PORT METRICS_PORT`` and serves until killed::

    python tests/v2_model_server.py --mode v2
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INDEX = [{"name": "rf", "version": "v1", "state": "READY", "reason": ""},
         {"name": "lr", "version": "2", "state": "UNAVAILABLE", "reason": "failed"}]
METADATA = {"rf": {"name": "rf", "versions": ["v1", "v0"], "platform": "sklearn",
                   "inputs": [], "outputs": []},
            "lr": {"name": "lr", "versions": [], "platform": "", "inputs": [], "outputs": []}}
V1 = {"models": {"fraud": {"default_version": "v2", "versions": {"v1": {}, "v2": {}}}}}
METRICS = ("# HELP model_infer_request_success Model infer request success count\n"
           "# TYPE model_infer_request_success counter\n"
           'model_infer_request_success_total{model="rf",version="v1"} 3.0\n')


def handler(mode: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _json(self, doc: object, status: int = 200) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self) -> None:
            if mode == "slow":
                time.sleep(30)
            if mode == "drip":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                while True:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.5)
            path = self.path
            if path == "/v1/models" and mode in ("v1", "slow"):
                return self._json(V1)
            if mode == "huge":  # every answer, /v1 and /v2 alike
                return self._json({"models": {f"m{i}": {"versions": ["x" * 100]}
                                              for i in range(20000)}})
            if path == "/v2/repository/index" and self.command == "POST":
                return self._json(INDEX)
            if path.startswith("/v2/models/") and path.count("/") == 3:
                name = path.rsplit("/", 1)[1]
                if name in METADATA:
                    return self._json(METADATA[name])
            self._json({"detail": "Not Found"}, 404)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._answer()

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._answer()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def metrics_handler() -> type[BaseHTTPRequestHandler]:
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/metrics":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(METRICS.encode())

        def log_message(self, *args: object) -> None:
            pass

    return Metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["v2", "v1", "slow", "drip", "huge"], default="v2")
    args = p.parse_args(argv)
    main_server = ThreadingHTTPServer(("127.0.0.1", 0), handler(args.mode))
    metrics = ThreadingHTTPServer(("127.0.0.1", 0), metrics_handler())
    main_server.daemon_threads = metrics.daemon_threads = True
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    print(main_server.server_address[1], metrics.server_address[1], flush=True)
    main_server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
