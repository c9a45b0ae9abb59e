"""Shared fixtures: artifacts, a private redis-server, and the reference service under real
gunicorn on an ephemeral 127.0.0.1 port.

- ``artifacts_dir`` (session): the repo's ``artifacts/`` when ``make`` built it, else a
  fresh training run into a temp dir (slow, once per session).
- ``redis_server`` (session): a private redis-server with the features loaded; fails with
  a clear message when redis-server is not installed (run ``make system-deps``).
- ``reference_service`` (function): a factory ``start(**gunicorn_command options) ->
  RunningService``; every service it started is killed, with its whole process tree, at
  teardown. ``reference_service_module`` is the same factory at module scope.
- ``http``: ``http(method, url, body=None, headers=None, timeout=30) -> HttpResult``, a
  plain urllib client that never raises on HTTP status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo_artifacts = Path(os.environ.get("REFSVC_ARTIFACTS") or REPO / "artifacts")
    if (repo_artifacts / "manifest.json").is_file():
        return repo_artifacts
    from reference_service.train import build

    out = tmp_path_factory.mktemp("artifacts")
    build(out)
    return out


@pytest.fixture(scope="session")
def redis_server(artifacts_dir: Path) -> Iterator[Any]:
    """A private redis-server (127.0.0.1, no persistence) holding the feature tables."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed; run `make system-deps` "
                    "(Debian package redis-server)", pytrace=False)
    from reference_service import redis_server as rs

    server = rs.start_with_features(artifacts_dir)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
          timeout: float = 30.0) -> HttpResult:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                              resp.read())
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@pytest.fixture(scope="session")
def http() -> Callable[..., HttpResult]:
    return _http


@dataclass
class RunningService:
    """A reference service under gunicorn. ``pid`` is the gunicorn master."""

    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.pid).children()]

    def wait_for_workers(self, n: int, timeout_s: float = 30.0) -> list[int]:
        """The sorted worker pids once ``n`` are up (/readyz answers as soon as one worker
        has booted), or whatever is there at the timeout."""
        deadline = time.monotonic() + timeout_s
        while len(self.worker_pids()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return sorted(self.worker_pids())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        from reference_service.launch import cleanup

        _kill_tree(self.process)
        cleanup(self.env)


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        try:
            # The service runs in its own session, so its process group is exactly its
            # tree. SIGKILL: gunicorn's own shutdown idles ~2 s in the master, and nothing
            # a test checks happens during it.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait(timeout=5)
    # psutil.wait_procs backs off to ~2 s polls for non-children; poll briefly ourselves.
    deadline = time.monotonic() + 5
    alive = tree[1:]
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.02)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ServiceFactory:
    def __init__(self, tmp_dir: Path, artifacts: Path):
        self.tmp_dir = tmp_dir
        self.artifacts = artifacts
        self.started: list[RunningService] = []

    def __call__(self, *, wait: bool = True, ready_timeout_s: float = 60.0,
                 env: dict[str, str] | None = None, **options: Any) -> RunningService:
        """Start a service; ``env`` adds variables to its environment only (not the tests')."""
        from reference_service.launch import gunicorn_command, wait_ready

        options.setdefault("artifacts_dir", str(self.artifacts))
        options.setdefault("workers", 2)
        port = free_port()
        argv, extra = gunicorn_command(port=port, **options)
        log_path = self.tmp_dir / f"service-{port}.log"
        env = {**os.environ, **extra, **(env or {})}
        if "admin_token" not in options:
            env.pop("REFSVC_ADMIN_TOKEN", None)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=self.tmp_dir)
        svc = RunningService(f"http://127.0.0.1:{port}", proc, extra, log_path, options)
        self.started.append(svc)
        if wait:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"service exited with {proc.returncode}:\n{svc.log()}")
                try:
                    wait_ready(svc.url, min(2.0, max(deadline - time.monotonic(), 0.1)))
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
        return svc

    def close(self) -> None:
        for svc in self.started:
            svc.stop()


@pytest.fixture
def reference_service(tmp_path: Path, artifacts_dir: Path) -> Iterator[ServiceFactory]:
    factory = ServiceFactory(tmp_path, artifacts_dir)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def reference_service_module(tmp_path_factory: pytest.TempPathFactory,
                             artifacts_dir: Path) -> Iterator[ServiceFactory]:
    factory = ServiceFactory(tmp_path_factory.mktemp("svc"), artifacts_dir)
    try:
        yield factory
    finally:
        factory.close()


def parse_server_timing(header: str) -> dict[str, float]:
    """Minimal W3C Server-Timing parser for these tests: name -> dur in ms."""
    out = {}
    for entry in header.split(","):
        parts = [p.strip() for p in entry.split(";")]
        for p in parts[1:]:
            if p.startswith("dur="):
                out[parts[0]] = float(p[4:])
    return out


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
