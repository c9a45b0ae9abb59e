"""How to start the reference service under gunicorn: the argv and environment, and the
readiness wait. Used by ``harness run --serve reference``, the tests and ``serve.py``."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from reference_service.faults import load_file

WORKER_CLASSES = ("sync", "gthread")


class ServiceNotReady(Exception):
    """/readyz did not answer 200 in time."""


def gunicorn_command(
    *, port: int, host: str = "127.0.0.1", workers: int = 2, worker_class: str = "sync",
    threads: int = 1, store: str = "sqlite", redis_url: str | None = None,
    faults: str | None = None, default_versions: dict[str, str] | None = None,
    artifacts_dir: str | None = None, admin_token: str | None = None,
    record_traffic: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv (venv python -m gunicorn ...) and the environment variables to add.

    Creates a fresh Prometheus multiprocess directory and a fault state directory; a fault
    file is validated here so a bad one fails before gunicorn starts.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535 (got {port!r})")
    if not 1 <= workers <= 64:
        raise ValueError(f"workers must be between 1 and 64 (got {workers!r})")
    if worker_class not in WORKER_CLASSES:
        raise ValueError(f"worker_class must be one of {WORKER_CLASSES} (got {worker_class!r})")
    if not 1 <= threads <= 256:
        raise ValueError(f"threads must be between 1 and 256 (got {threads!r})")
    if store not in ("sqlite", "redis"):
        raise ValueError(f"store must be 'sqlite' or 'redis' (got {store!r})")
    if store == "redis" and not redis_url:
        raise ValueError("store 'redis' needs redis_url")
    if faults is not None:
        load_file(faults)  # raises FaultConfigError naming the field
    run_dir = Path(tempfile.mkdtemp(prefix="refsvc-run-"))
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "prometheus"),
        "REFSVC_FAULTS_STATE": str(run_dir / "faults.json"),
        "REFSVC_STORE": store,
        # Workers share 2 cores: OpenMP threads inside predict would only contend.
        "OMP_NUM_THREADS": "1",
    }
    (run_dir / "prometheus").mkdir()
    if redis_url:
        env["REFSVC_REDIS_URL"] = redis_url
    if faults is not None:
        env["REFSVC_FAULTS"] = str(Path(faults).resolve())
    if default_versions:
        env["REFSVC_DEFAULT_VERSIONS"] = ",".join(f"{k}={v}" for k, v in default_versions.items())
    if artifacts_dir is not None:
        env["REFSVC_ARTIFACTS"] = str(Path(artifacts_dir).resolve())
    if admin_token is not None:
        env["REFSVC_ADMIN_TOKEN"] = admin_token
    if record_traffic is not None:
        env["REFSVC_RECORD_TRAFFIC"] = str(Path(record_traffic).resolve())
    argv = [
        sys.executable, "-m", "gunicorn", "-c", "python:reference_service.gunicorn_conf",
        "--bind", f"{host}:{port}", "--workers", str(workers),
        "--worker-class", worker_class, "--threads", str(threads),
        "reference_service.app:create_app()",
    ]
    return argv, env


def cleanup(env: dict[str, str]) -> None:
    """Remove the temp run directory that ``gunicorn_command`` created (after the stop)."""
    state = env.get("REFSVC_FAULTS_STATE")
    if state and Path(state).parent.name.startswith("refsvc-run-"):
        shutil.rmtree(Path(state).parent, ignore_errors=True)


def wait_ready(base_url: str, timeout_s: float) -> None:
    """Poll ``/readyz`` until it answers 200; raise ServiceNotReady with the last answer."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 (got {timeout_s!r})")
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/readyz", timeout=2.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            last = f"HTTP {exc.code}: {detail}"
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if time.monotonic() >= deadline:
            raise ServiceNotReady(
                f"{base_url}/readyz did not answer 200 within {timeout_s:g} s (last: {last})")
        time.sleep(0.05)
