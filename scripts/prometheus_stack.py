"""Run a local Prometheus scraping a model service on 127.0.0.1, with the SLO alert rules.

    .venv/bin/python scripts/prometheus_stack.py --target 127.0.0.1:8000 \
        --slo examples/slo.yaml [--port 9090] [--scrape-interval 1] [--dir /tmp/prom]

Prints the Prometheus URL, then runs until Ctrl-C. docs/monitoring.md walks through it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.exports.stack import PrometheusStack, StackError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of the service's /metrics")
    p.add_argument("--slo", type=Path, default=None, help="load the SLO's alert rules too")
    p.add_argument("--port", type=int, default=None, help="Prometheus port (default: free)")
    p.add_argument("--scrape-interval", type=float, default=1.0, help="seconds")
    p.add_argument("--dir", type=Path, default=None, help="keep config and TSDB here")
    args = p.parse_args(argv)
    try:
        stack = PrometheusStack(args.target, slo=args.slo, port=args.port,
                                scrape_interval_s=args.scrape_interval,
                                work_dir=args.dir).start()
    except (StackError, ValueError, OSError) as exc:
        print(f"prometheus_stack: {exc}", file=sys.stderr)
        return 2
    print(f"prometheus: {stack.url}  (config {stack.config_path}); Ctrl-C stops it",
          flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and stack.process is not None and stack.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
