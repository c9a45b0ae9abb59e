"""The recording middleware, wrapping a small real WSGI app served by real gunicorn on
127.0.0.1: what it keeps, what it redacts, its sampling and its caps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.rundir.replay import REDACTED, read_replay
from reference_service.recording import RecordingConfig, wrap_from_env

REPO = Path(__file__).resolve().parent.parent
ECHO_APP = '''
from reference_service.recording import wrap_from_env


def _base(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    start_response("201 Created" if environ["PATH_INFO"] == "/create" else "200 OK",
                   [("Content-Type", "application/json")])
    return [b'{"bytes": %d}' % len(body)]


app = wrap_from_env(_base)
'''


@dataclass
class EchoServer:
    url: str
    proc: subprocess.Popen[bytes]
    record_dir: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)


def start_echo(tmp: Path, threads: int = 16, workers: int = 1, **env: str) -> EchoServer:
    """gunicorn serving the echo app with REFSVC_RECORD_TRAFFIC=tmp/rec (plus ``env``)."""
    app_dir = tmp / "app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "echo_app.py").write_text(ECHO_APP)
    record_dir = tmp / "rec"
    log = tmp / "echo.log"
    full_env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{app_dir}",
                "REFSVC_RECORD_TRAFFIC": str(record_dir), **env}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "gthread",
             "--threads", str(threads), "-b", "127.0.0.1:0", "echo_app:app"],
            stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=app_dir,
            start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            server = EchoServer(m[1], proc, record_dir, log)
            _wait_http(server.url + "/healthz")
            return server
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"echo server did not start:\n{log.read_text()}")


def _wait_http(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[EchoServer]:
    server = start_echo(tmp_path)
    yield server
    server.stop()


def test_records_method_path_body_status_and_redacts_secrets(echo):
    body = json.dumps({"instances": [{"entity_id": 7, "features": {"amount": 1.5}}]}).encode()
    secret_headers = {"Authorization": "Bearer s3cret", "Cookie": "sid=abc",
                      "X-Api-Key": "k-123", "X-Auth-Token": "t-456",
                      "Content-Type": "application/json", "X-Tenant": "blue"}
    assert post(echo.url + "/v1/models/fraud/predict?debug=1", body, secret_headers) == \
        {"bytes": len(body)}
    post(echo.url + "/create", b"\xff\x00binary", {"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(echo.url + "/metrics", timeout=5).read()  # excluded by default
    echo.stop()  # the worker's file is complete once it is gone
    replay = read_replay(echo.record_dir)
    paths = [r.path for r in replay.records]
    assert paths == ["/v1/models/fraud/predict?debug=1", "/create"]
    first, second = replay.records
    assert first.method == "POST" and first.body == body and first.status == 200
    headers = dict(first.headers)
    for name in ("Authorization", "Cookie", "X-Api-Key", "X-Auth-Token"):
        assert headers[name] == REDACTED
    assert headers["X-Tenant"] == "blue" and headers["Content-Type"] == "application/json"
    assert "Host" not in headers and "Content-Length" not in headers
    assert "Authorization" not in first.sendable_headers()
    raw = b"".join(p.read_bytes() for p in echo.record_dir.glob("replay-*.jsonl"))
    for secret in (b"s3cret", b"sid=abc", b"k-123", b"t-456"):
        assert secret not in raw
    assert second.body == b"\xff\x00binary" and second.status == 201
    assert 0 <= first.t <= second.t < 5


def test_sampling_and_body_cap(tmp_path):
    server = start_echo(tmp_path, REFSVC_RECORD_SAMPLE="0.5", REFSVC_RECORD_MAX_BODY_KB="1")
    try:
        for i in range(200):
            post(server.url + "/p", json.dumps({"i": i}).encode())
        big = b"x" * 5000
        sent_big = 0
        for _ in range(20):
            assert post(server.url + "/big", big) == {"bytes": 5000}  # the app got it all
            sent_big += 1
    finally:
        server.stop()
    records = read_replay(server.record_dir).records
    small = [r for r in records if r.path == "/p"]
    # binomial(200, 0.5): 4 standard deviations is 28
    assert abs(len(small) - 100) < 28, len(small)
    assert len({r.body for r in small}) == len(small)  # each recorded once
    bigs = [r for r in records if r.path == "/big"]
    assert bigs and all(r.body is None and r.body_omitted and r.body_bytes == 5000
                        for r in bigs)


def test_size_cap_stops_recording_and_the_service_keeps_answering(tmp_path):
    server = start_echo(tmp_path, REFSVC_RECORD_MAX_MB=str(4096 / (1 << 20)))
    try:
        for i in range(100):
            assert post(server.url + "/p", json.dumps({"i": i, "pad": "y" * 100}).encode())
    finally:
        server.stop()
    files = list(server.record_dir.glob("replay-*.jsonl"))
    assert len(files) == 1 and files[0].stat().st_size <= 4096
    n = len(read_replay(server.record_dir).records)
    assert 10 < n < 100
    assert "traffic recording stopped" in server.log.read_text()


def test_off_by_default_and_bad_settings_name_the_variable():
    def app(environ, start_response):  # pragma: no cover - never called
        return []

    assert wrap_from_env(app, {}) is app
    with pytest.raises(ValueError, match=r"sample must be in \(0, 1\] \(got 0.0\)"):
        RecordingConfig.from_env({"REFSVC_RECORD_TRAFFIC": "/tmp/x",
                                  "REFSVC_RECORD_SAMPLE": "0"})
    with pytest.raises(ValueError, match="REFSVC_RECORD_MAX_MB must be a number"):
        RecordingConfig.from_env({"REFSVC_RECORD_TRAFFIC": "/tmp/x",
                                  "REFSVC_RECORD_MAX_MB": "lots"})
