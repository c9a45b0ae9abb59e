"""gunicorn configuration of the reference service (``-c python:reference_service.gunicorn_conf``).

Bind, workers, worker class and threads come from the command line (``launch.py`` builds
it); this file holds the hooks that make the service correct under several workers:
- ``on_starting`` (master, once, after the preloaded app is built): wipe
  ``PROMETHEUS_MULTIPROC_DIR`` so counters start at 0, and create the shared fault state
  file (validating ``REFSVC_FAULTS``) that every worker re-reads;
- ``child_exit`` (master): mark a dead worker's metrics files dead and fold its counters and
  histograms into one archive file per type (metrics_compact.py);
- ``post_fork`` (worker): a read deadline per request against slow clients (slowclient.py);
- ``worker_exit`` (worker): flush the worker's OTLP spans (tracing.py, ``REFSVC_TRACING=otlp``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

wsgi_app = "reference_service.app:create_app()"
bind = "127.0.0.1:8000"
accesslog = None  # per-request access logging would be measured as service overhead
errorlog = "-"
loglevel = "info"
timeout = 60
graceful_timeout = 5
keepalive = 5
# Load and verify the models once in the master and fork: workers start in milliseconds
# and share the model pages. Stores open their connections lazily, per worker.
preload_app = True
# The control socket defaults to one path under $HOME: parallel services would collide.
control_socket_disable = True


def on_starting(server: Any) -> None:
    prom = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if prom:
        path = Path(prom)
        if path.exists():
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        path.mkdir(parents=True, exist_ok=True)
    from reference_service.faults import load_file, new_state_file, write_state

    initial = load_file(os.environ["REFSVC_FAULTS"]) if os.environ.get("REFSVC_FAULTS") else {}
    state = os.environ.get("REFSVC_FAULTS_STATE")
    if state:
        Path(state).parent.mkdir(parents=True, exist_ok=True)
        write_state(Path(state), initial)
    else:
        os.environ["REFSVC_FAULTS_STATE"] = str(new_state_file(initial))
    server.log.info("fault state file %s (%d faults at start)",
                    os.environ["REFSVC_FAULTS_STATE"], len(initial))


def post_fork(server: Any, worker: Any) -> None:
    # Slow clients (slowloris) must not hold every sync worker: see slowclient.py.
    from reference_service.slowclient import install

    install(worker)


def worker_exit(server: Any, worker: Any) -> None:
    # Spans still in the batch processor's queue go out before the worker is gone.
    from reference_service import tracing

    tracing.shutdown()


def child_exit(server: Any, worker: Any) -> None:
    from reference_service.metrics import mark_process_dead
    from reference_service.metrics_compact import compact_dead_worker

    mark_process_dead(worker.pid)
    # Recycled workers (max_requests) would otherwise leave their files behind forever.
    compact_dead_worker(worker.pid)
