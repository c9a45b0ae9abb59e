"""A private ``redis-server`` on 127.0.0.1 for the launcher when no ``--redis-url`` is given:
no persistence, its own directory, stopped (and the directory removed) by ``stop()``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisStartError(RuntimeError):
    """redis-server is not installed or did not come up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(workdir: Path, preexec_fn: Callable[[], None] | None = None,
          timeout_s: float = 10.0) -> RedisProcess:
    """Start redis-server in ``workdir`` (created) and wait until it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisStartError("redis-server is not on PATH (Debian package redis-server; "
                              "`make system-deps` installs it), or pass --redis-url")
    # The port is free now and may be taken before redis binds it: retry on that race.
    for _attempt in range(3):
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning",
                "--logfile", ""]
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full one
        # would stall it.
        with open(workdir / "redis.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=preexec_fn)
        server = RedisProcess(proc, port, workdir)
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        return server
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        err = ((workdir / "redis.log").read_text(errors="replace").strip()
               if proc.poll() is not None else "") or "no answer to PING"
        server.stop()
        if "Address already in use" not in err:
            raise RedisStartError(f"redis-server on port {port} did not start: {err}")
    raise RedisStartError("redis-server could not bind a free port in 3 attempts")
