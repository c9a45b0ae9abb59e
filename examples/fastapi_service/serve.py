"""Start the service the way a deployment would: store prepared, then uvicorn.

    python -m examples.fastapi_service.serve --port 8080 --workers 2 --store redis
    python -m examples.fastapi_service.serve --port 8080 --store sqlite --faults faults.json

Steps: check the fault settings and the artifacts (a bad one stops here with one line and
exit code 2), make a private temporary directory, start a private redis-server unless
``--redis-url`` names one, load the features (applying the ``null_feature`` fault), then run
uvicorn as a child and wait. SIGTERM or SIGINT stops uvicorn (which stops its workers),
then redis-server, then removes the directory: nothing is left behind. The launcher stays
the parent instead of exec'ing uvicorn because someone has to clean up after it.
Children get a parent-death signal, so even a SIGKILLed launcher leaves no orphan
processes (only its temporary directory).
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import redis

from examples.fastapi_service import faults as faults_mod
from examples.fastapi_service import loader, redis_proc
from examples.fastapi_service.artifacts import ArtifactError, read_manifest
from examples.fastapi_service.settings import DEFAULT_ARTIFACTS

REPO = Path(__file__).resolve().parents[2]
APP = "examples.fastapi_service.app:app"
# uvicorn's own SIGINT handling gets this long before it is sent SIGTERM (a terminal's
# Ctrl-C reaches the whole process group; a second signal would make uvicorn skip its
# lifespan shutdown, which flushes the spans).
SIGINT_GRACE_S = 2.0
STOP_TIMEOUT_S = 15.0


class _Interrupted(Exception):
    """A stop signal arrived before uvicorn was started."""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the launcher dies (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the FastAPI delivery-ETA service.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    p.add_argument("--redis-url", help="use this Redis (loaded on start) instead of a private "
                                       "redis-server")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    p.add_argument("--faults", type=Path, help="JSON fault file (faults.py)")
    p.add_argument("--otel", action="store_true", help="FASTSVC_OTEL=1 (OTEL_* vars apply)")
    p.add_argument("--access-log", action="store_true", help="uvicorn's per-request log")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error(f"--port must be between 1 and 65535 (got {args.port})")
    if not 1 <= args.workers <= 64:
        p.error(f"--workers must be between 1 and 64 (got {args.workers})")
    return args


class Launcher:
    def __init__(self, args: argparse.Namespace, config: faults_mod.FaultConfig) -> None:
        self.args = args
        self.config = config
        self.uvicorn: subprocess.Popen[bytes] | None = None
        self.redis: redis_proc.RedisProcess | None = None
        self.signal: int | None = None
        self.signal_at = 0.0
        self.term_sent = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only a note: raising here could land between a child's start and the line that
        # records it, and that child would go unstopped.
        if self.signal is None:
            self.signal, self.signal_at = signum, time.monotonic()

    def _check_stop(self) -> None:
        if self.signal is not None:
            raise _Interrupted

    def _prepare_store(self, tmp: Path) -> dict[str, str]:
        a = self.args
        if a.store == "sqlite":
            path = tmp / "features.sqlite"
            report = loader.load_sqlite(path, a.artifacts, self.config)
            env = {"FASTSVC_STORE": "sqlite", "FASTSVC_SQLITE_PATH": str(path)}
        else:
            url = a.redis_url
            if not url:
                self.redis = redis_proc.start(tmp / "redis", preexec_fn=_die_with_parent)
                url = self.redis.url
                self._check_stop()
            report = loader.load_redis(url, a.artifacts, self.config)
            env = {"FASTSVC_STORE": "redis", "FASTSVC_REDIS_URL": url}
        nulled = (f", {report.nulled} with {self.config.null_feature} nulled"
                  if report.nulled else "")
        print(f"fastsvc: {report.entities} restaurants loaded into {a.store} in "
              f"{report.seconds:.1f} s{nulled} (workdir {tmp})", flush=True)
        return env

    def _environment(self, tmp: Path, store_env: dict[str, str]) -> dict[str, str]:
        a = self.args
        env = {**os.environ, **store_env, "FASTSVC_ARTIFACTS": str(a.artifacts)}
        # The service's small-batch predictions gain nothing from OpenMP threads, and on a
        # busy 2-core machine they lose a lot (v2, 8 rows: median 5-8 ms with one thread,
        # 19-62 ms with one per core).
        env.setdefault("OMP_NUM_THREADS", "1")
        if a.faults:
            env[faults_mod.FILE_ENV] = str(a.faults.resolve())
        if a.otel:
            env["FASTSVC_OTEL"] = "1"
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if a.workers > 1:
            (tmp / "prometheus").mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "prometheus")
        return env

    def _command(self) -> list[str]:
        a = self.args
        cmd = [sys.executable, "-m", "uvicorn", APP, "--host", a.host, "--port", str(a.port),
               "--workers", str(a.workers), "--app-dir", str(REPO),
               "--timeout-graceful-shutdown", "5", "--log-level", a.log_level]
        return cmd if a.access_log else [*cmd, "--no-access-log"]

    def _ready(self) -> bool:
        # http.client, not urllib: urllib would send a local probe to an http_proxy.
        host = "127.0.0.1" if self.args.host in ("0.0.0.0", "::", "") else self.args.host
        conn = http.client.HTTPConnection(host, self.args.port, timeout=0.5)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _supervise(self) -> int:
        """Wait for uvicorn; relay stop signals; give up on a start that never gets ready."""
        assert self.uvicorn is not None
        ready = False
        deadline = time.monotonic() + self.args.ready_timeout
        while (rc := self.uvicorn.poll()) is None:
            if self.signal is not None and not self.term_sent and (
                    self.signal != signal.SIGINT
                    or time.monotonic() - self.signal_at > SIGINT_GRACE_S):
                self.uvicorn.send_signal(signal.SIGTERM)
                self.term_sent = True
            if not ready and self.signal is None:
                if self._ready():
                    ready = True
                    print(f"fastsvc: ready at http://{self.args.host}:{self.args.port} "
                          f"({self.args.workers} workers, pid {os.getpid()})", flush=True)
                elif time.monotonic() > deadline:
                    print(f"error: not ready after {self.args.ready_timeout:g} s",
                          file=sys.stderr, flush=True)
                    self._stop_uvicorn()
                    return 1
            time.sleep(0.1)
        if self.signal is not None:
            return 0
        return rc if rc >= 0 else 128 - rc  # killed by a signal: the shell's convention

    def _stop_uvicorn(self) -> None:
        proc = self.uvicorn
        if proc is None or proc.poll() is not None:
            return
        if not self.term_sent:
            proc.send_signal(signal.SIGTERM)
            self.term_sent = True
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Workers are uvicorn's children; a stuck supervisor must not strand them.
            import psutil

            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        tmp = Path(tempfile.mkdtemp(prefix="fastsvc-"))
        try:
            env = self._environment(tmp, self._prepare_store(tmp))
            self._check_stop()
            self.uvicorn = subprocess.Popen(self._command(), env=env, preexec_fn=_die_with_parent)
            return self._supervise()
        except _Interrupted:
            return 0
        except (ArtifactError, redis_proc.RedisStartError, redis.RedisError,
                OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            # Signals during cleanup must not interrupt it halfway.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._stop_uvicorn()
            if self.redis is not None:
                self.redis.stop()
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    if args.faults:
        env[faults_mod.FILE_ENV] = str(args.faults)
    try:
        config = faults_mod.from_env(env)
        manifest = read_manifest(args.artifacts)
        config.check_versions(sorted(manifest["versions"]))
    except (faults_mod.FaultConfigError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return Launcher(args, config).run()


if __name__ == "__main__":
    raise SystemExit(main())
