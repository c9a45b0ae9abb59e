"""Run the reference service under gunicorn in the foreground.

    python -m reference_service.serve --port 8000 [--workers 2] [--worker-class gthread
        --threads 4] [--store redis --redis-url redis://127.0.0.1:6390/0]
        [--faults faults.yaml] [--default-version fraud=v2] [--admin-token-env VAR]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from reference_service.config import parse_versions
from reference_service.launch import cleanup, gunicorn_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_service.serve",
                                description="Serve the reference models under gunicorn.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--store", default="sqlite", choices=["sqlite", "redis"])
    p.add_argument("--redis-url", help="Redis holding the features (see redis_server)")
    p.add_argument("--faults", help="YAML/JSON fault config applied at start")
    p.add_argument("--default-version", action="append", default=[], metavar="MODEL=VERSION")
    p.add_argument("--artifacts", help="artifacts directory (default: <repo>/artifacts)")
    p.add_argument("--admin-token-env", metavar="VAR",
                   help="enable /admin/faults with the token read from env VAR "
                        "(not a flag value: argv is visible to every local user)")
    p.add_argument("--record-traffic", metavar="DIR", help="record requests as JSON lines")
    args = p.parse_args(argv)
    token = None
    if args.admin_token_env:
        token = os.environ.get(args.admin_token_env)
        if not token:
            p.error(f"--admin-token-env: environment variable {args.admin_token_env} is empty")
    try:
        command, env = gunicorn_command(
            port=args.port, host=args.host, workers=args.workers,
            worker_class=args.worker_class, threads=args.threads, store=args.store,
            redis_url=args.redis_url, faults=args.faults,
            default_versions=parse_versions(",".join(args.default_version)) or None,
            artifacts_dir=args.artifacts, admin_token=token,
            record_traffic=args.record_traffic)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _run(command, env)


def _run(command: list[str], env: dict[str, str]) -> int:
    """gunicorn as a child (not exec'd), so that its temporary run directory (metrics,
    fault state) is removed however it ends: Ctrl-C, SIGTERM, a closed terminal (SIGHUP)."""
    proc = subprocess.Popen(command, env={**os.environ, **env})
    got: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        got.append(signum)
        if proc.poll() is None:
            # gunicorn's graceful stop; a second signal means now
            proc.send_signal(signal.SIGTERM if len(got) == 1 else signal.SIGKILL)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        code = proc.wait()
    finally:
        cleanup(env)
    return 128 + got[0] if got else code


if __name__ == "__main__":
    raise SystemExit(main())
