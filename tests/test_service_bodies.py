"""Request bodies without a length, and the foreground launcher's clean-up (issue 20)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

pytestmark = pytest.mark.slow
PREDICT = "/v1/models/fraud/predict"
BODY = json.dumps({"instances": [{"entity_id": 7, "features": {"amount": 12.5}}]}).encode()


def _chunked(url_port: int, body: bytes) -> bytes:
    """POST ``body`` with Transfer-Encoding: chunked; the raw answer."""
    with socket.create_connection(("127.0.0.1", url_port), timeout=30) as c:
        c.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode())
        try:
            for i in range(0, len(body), 65536):
                chunk = body[i:i + 65536]
                c.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            c.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the service may answer 413 and close while we are still sending
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


def test_a_chunked_body_over_the_limit_is_413_not_truncated(reference_service: Any) -> None:
    svc = reference_service(workers=1)
    port = int(svc.url.rsplit(":", 1)[1])
    # valid JSON followed by padding: under the 1 MiB limit it is fine ...
    assert _chunked(port, BODY + b" " * (900 << 10)).startswith(b"HTTP/1.1 200")
    # ... over it, it must be refused like the same body with a Content-Length, not cut
    answer = _chunked(port, BODY + b" " * (1100 << 10))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer


def _refsvc_dirs(tmp: Path) -> set[str]:
    return {p.name for p in tmp.glob("refsvc-run-*")}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_serve_removes_its_temporary_directory_on_every_stop(artifacts_dir: Path,
                                                             sig: int, tmp_path: Path) -> None:
    # The service's own TMPDIR: under `make test` another worker's services make and
    # remove refsvc-run-* directories in the shared /tmp at the same time.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reference_service.serve", "--port",
                             str(port), "--workers", "1", "--artifacts", str(artifacts_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        from reference_service.launch import wait_ready

        wait_ready(f"http://127.0.0.1:{port}", 60)
        assert _refsvc_dirs(tmp_path), "the service made no run directory to clean"
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 128 + sig
    assert not _refsvc_dirs(tmp_path)
    # no gunicorn process of this port may remain
    out = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout
