"""Real processes for the collector tests: a gunicorn service on 127.0.0.1 and helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil

GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def children(pid: int) -> list[int]:
    try:
        return sorted(p.pid for p in psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return []


@contextlib.contextmanager
def gunicorn(app_source: str, workdir: Path, workers: int = 2,
             args: Sequence[str] = ()) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Serve ``app_source`` (a module defining ``application``) with gunicorn sync workers;
    ``args`` are more gunicorn options."""
    (workdir / "svc_app.py").write_text(app_source)
    port = free_port()
    proc = subprocess.Popen(
        [GUNICORN, "-w", str(workers), "-b", f"127.0.0.1:{port}", "--chdir", str(workdir),
         "--graceful-timeout", "2", *args, "svc_app:application"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "gunicorn.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: len(children(proc.pid)) == workers, 20, f"{workers} gunicorn workers")

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(answers, 20, "gunicorn to answer")
        yield proc, url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
