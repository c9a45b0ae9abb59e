"""Helpers of tests/test_fastapi_service.py: a kept-alive HTTP client, a launched service
(stopped and checked by process group), a fleet of them started together, and the two
latency measures (interleaved medians, concurrent pairs)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from conftest import free_port

REPO = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "examples.fastapi_service.serve"]


def post(conn: http.client.HTTPConnection, path: str, body: Any,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, float]:
    """(status, lower-cased headers, body, seconds) over a kept-alive connection."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    for attempt in (1, 2):
        t0 = time.perf_counter()
        try:
            conn.request("POST" if body is not None else "GET", path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # uvicorn closes a connection idle for 5 s (its keep-alive timeout); the
            # request never reached the app, so sending it again is safe.
            conn.close()
            if attempt == 2:
                raise
            continue
        elapsed = time.perf_counter() - t0
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload, elapsed
    raise AssertionError("unreachable")


@dataclass
class Service:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    workers: int
    conns: list[http.client.HTTPConnection] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def conn(self) -> http.client.HTTPConnection:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.conns.append(c)
        return c

    def group(self) -> list[psutil.Process]:
        """Live processes of the launcher's process group (it runs in its own session)."""
        out = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.proc.pid and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        return out

    def workdir(self) -> Path:
        """The launcher's temporary directory, from its 'loaded' line."""
        match = re.search(r"\(workdir (\S+)\)", self.log())
        assert match, self.log()
        return Path(match.group(1))

    def stop(self, sig: int = signal.SIGTERM, group: bool = False,
             timeout_s: float = 20.0) -> int | None:
        """Signal the launcher (or, like a terminal's Ctrl-C, its whole process group) and
        wait for it; whatever it left running is killed here and the return code says so."""
        for c in self.conns:
            c.close()
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        for p in self.group():
            try:
                p.kill()
            except psutil.Error:
                pass
        return self.proc.poll()

    def assert_clean_stop(self, sig: int = signal.SIGTERM, group: bool = False) -> None:
        """Stop as a user would, then: exit code 0, no process of the group left (uvicorn,
        its workers, redis-server), the temporary directory gone."""
        workdir = self.workdir()
        assert workdir.is_dir()
        t0 = time.monotonic()
        rc = self.stop(sig, group)
        # A process that outlived the launcher is reaped by init a moment later; look twice.
        left = self.group()
        if left:
            time.sleep(0.5)
            left = self.group()
        assert rc == 0, self.log()
        assert not left, [p.cmdline() for p in left]
        assert not workdir.exists()
        assert time.monotonic() - t0 < 20


class Fleet:
    """Services by name: ``fleet["slow-store"]`` is that service, ready."""

    def __init__(self, specs: dict[str, dict[str, Any]], tmp: Path, artifacts: Path) -> None:
        self.specs = specs
        self.tmp = tmp
        self.artifacts = artifacts
        self.services: dict[str, Service] = {}
        self.ready: set[str] = set()

    def start(self, name: str) -> Service:
        spec = self.specs[name]
        port, workers = free_port(), spec.get("workers", 1)
        argv = [*SERVE, "--port", str(port), "--workers", str(workers),
                "--store", spec.get("store", "redis"), "--artifacts", str(self.artifacts)]
        if spec.get("faults"):
            path = self.tmp / f"faults-{name}.json"
            path.write_text(json.dumps(spec["faults"]))
            argv += ["--faults", str(path)]
        log_path = self.tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FASTSVC_", "OTEL_", "PROMETHEUS_MULTIPROC"))}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    env={**env, **spec.get("env", {})}, start_new_session=True)
        self.services[name] = Service(port, proc, log_path, workers)
        return self.services[name]

    def wait(self, name: str, timeout_s: float = 120.0) -> Service:
        """Ready = every worker ran its lifespan startup and the launcher saw /healthz
        answer (a single uvicorn worker listens only after its startup)."""
        svc = self.services[name]
        deadline = time.monotonic() + timeout_s
        while svc.log().count("fastsvc worker ready") < svc.workers or (
                "fastsvc: ready at" not in svc.log()):
            if svc.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start (rc {svc.proc.poll()}):\n"
                                     f"{svc.log()}")
            time.sleep(0.05)
        self.ready.add(name)
        return svc

    def __getitem__(self, name: str) -> Service:
        if name not in self.services:  # a test without its marker: start it now
            self.start(name)
        for pending in [n for n in self.services if n not in self.ready]:
            self.wait(pending)
        return self.services[name]

    def close(self) -> None:
        for svc in self.services.values():
            svc.stop()


def interleaved_medians(targets: list[tuple[Service, dict[str, Any]]], n: int,
                        warmup: int = 3) -> list[float]:
    """Median seconds per (service, body), requests alternated so that whatever the
    machine does meanwhile hits every target alike."""
    conns = [svc.conn() for svc, _ in targets]
    times: list[list[float]] = [[] for _ in targets]
    for i in range(warmup + n):
        for k, (conn, (_, body)) in enumerate(zip(conns, targets, strict=True)):
            status, _, payload, elapsed = post(conn, "/predict", body)
            assert status == 200, payload[:300]
            if i >= warmup:
                times[k].append(elapsed)
    return [statistics.median(t) for t in times]


def concurrent_pair_median(svc: Service, body: dict[str, Any], rounds: int = 5) -> float:
    """Median wall time of two requests sent at once on two connections to one worker."""
    conns = [svc.conn(), svc.conn()]
    for c in conns:
        assert post(c, "/predict", body)[0] == 200  # connect and warm up
    def one(conn: http.client.HTTPConnection, barrier: threading.Barrier,
            statuses: list[int]) -> None:
        barrier.wait()
        statuses.append(post(conn, "/predict", body)[0])

    walls = []
    for _ in range(rounds):
        barrier = threading.Barrier(3)
        statuses: list[int] = []
        threads = [threading.Thread(target=one, args=(c, barrier, statuses)) for c in conns]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        walls.append(time.perf_counter() - t0)
        assert statuses == [200, 200]
    return statistics.median(walls)
