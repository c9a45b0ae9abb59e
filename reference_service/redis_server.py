"""A private ``redis-server`` on 127.0.0.1 for the Redis feature store, and its loader.

Used by the tests, by ``harness run --serve reference --store redis``, and by users::

    python -m reference_service.redis_server --port 6390      # start, load, wait for Ctrl-C
    python -m reference_service.redis_server --url redis://127.0.0.1:6379/0 --load-only
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis as redis_lib

from reference_service.artifacts import default_artifacts_dir, load_manifest
from reference_service.store.base import ITEM_TABLE, USER_TABLE
from reference_service.store.redis import ITEM_PREFIX, META_KEY, USER_PREFIX
from reference_service.store.sqlite import read_table

BATCH = 5000


class RedisServerError(Exception):
    """redis-server is missing or did not start."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running private redis-server; ``stop()`` terminates it and removes its directory."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(port: int | None = None, timeout_s: float = 10.0) -> RedisServer:
    """Start redis-server on 127.0.0.1 without persistence and wait until it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisServerError(
            "redis-server is not on PATH; install it with `make system-deps` "
            "(Debian package redis-server)"
        )
    port = port or _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="refsvc-redis-"))
    argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
            "no", "--dir", str(workdir), "--protected-mode", "yes", "--loglevel", "warning"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = RedisServer(proc, port, workdir)
    client = redis_lib.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    last: object = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            shutil.rmtree(workdir, ignore_errors=True)
            raise RedisServerError(f"redis-server exited with code {proc.returncode}: {err}")
        try:
            if client.ping():
                client.close()
                return server
        except redis_lib.RedisError as exc:
            last = exc
        time.sleep(0.05)
    server.stop()
    raise RedisServerError(f"redis-server on port {port} did not answer in {timeout_s} s ({last})")


def load_features(url: str, artifacts_dir: Path | None = None) -> dict[str, int]:
    """Copy the users and items tables of the SQLite store into Redis (pipelined MSETs)."""
    directory = Path(artifacts_dir) if artifacts_dir else default_artifacts_dir()
    manifest = load_manifest(directory)
    sqlite_path = directory / manifest["store"]["sqlite"]
    client = redis_lib.Redis.from_url(url)
    counts = {}
    try:
        for table, prefix in ((USER_TABLE, USER_PREFIX), (ITEM_TABLE, ITEM_PREFIX)):
            cols, rows = read_table(sqlite_path, table)
            names = cols[1:]
            pipe = client.pipeline(transaction=False)
            for start_at in range(0, len(rows), BATCH):
                chunk = rows[start_at:start_at + BATCH]
                pipe.mset({
                    f"{prefix}{r[0]}": json.dumps(dict(zip(names, r[1:], strict=True)),
                                                  separators=(",", ":"))
                    for r in chunk
                })
            pipe.execute()
            counts[table] = len(rows)
        meta = {"users": counts[USER_TABLE], "items": counts[ITEM_TABLE],
                "store_sha256": manifest["artifacts"][manifest["store"]["sqlite"]]["sha256"]}
        client.set(META_KEY, json.dumps(meta))
    finally:
        client.close()
    return counts


def start_with_features(artifacts_dir: Path | None = None, port: int | None = None) -> RedisServer:
    """Start a private redis-server and load the feature tables into it."""
    server = start(port)
    try:
        load_features(server.url, artifacts_dir)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--url", help="existing Redis to load (with --load-only)")
    parser.add_argument("--load-only", action="store_true",
                        help="only load the features into --url, do not start a server")
    parser.add_argument("--artifacts", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.load_only:
            if not args.url:
                parser.error("--load-only needs --url")
            counts = load_features(args.url, args.artifacts)
            print(f"loaded {counts} into {args.url}")
            return 0
        t0 = time.perf_counter()
        server = start_with_features(args.artifacts, args.port)
    except Exception as exc:  # CLI entry point: one line, no traceback
        print(f"error: {exc}")
        return 1
    print(f"redis-server ready at {server.url} (pid {server.pid}, features loaded in "
          f"{time.perf_counter() - t0:.1f} s); Ctrl-C stops it", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop and server.process.poll() is None:
        time.sleep(0.2)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
