"""`harness export prometheus-rules|alertmanager|grafana`: monitoring config from the SLO file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

NAME = "export"


def register(sub: Any) -> None:
    s = sub.add_parser("export", help="write Prometheus rules, an Alertmanager config or a "
                       "Grafana dashboard for the service (docs/monitoring.md)")
    kinds = s.add_subparsers(dest="kind", metavar="KIND", required=True)
    rules = kinds.add_parser("prometheus-rules", help="recording rules and multi-window, "
                             "multi-burn-rate alerts from an SLO file")
    rules.add_argument("slo", type=Path, help="the SLO file `harness check` uses")
    rules.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
    rules.add_argument("--buckets", default=None,
                       help="latency histogram bucket bounds in seconds, comma-separated "
                       "(default: the reference service's)")
    am = kinds.add_parser("alertmanager", help="an Alertmanager routing and inhibition example")
    am.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
    am.add_argument("--page-url", default="http://127.0.0.1:9095/page")
    am.add_argument("--ticket-url", default="http://127.0.0.1:9095/ticket")
    gr = kinds.add_parser("grafana", help="a dashboard JSON and its provisioning files")
    gr.add_argument("--out", type=Path, required=True, help="directory to write into")
    gr.add_argument("--prometheus-url", default="http://127.0.0.1:9090")


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


def _buckets(raw: str | None) -> tuple[float, ...] | None:
    if raw is None:
        return None
    try:
        values = tuple(sorted(float(x) for x in raw.split(",") if x.strip()))
    except ValueError:
        raise ValueError(f"--buckets must be numbers in seconds, comma-separated (got {raw!r})")\
            from None
    if not values or values[0] <= 0:
        raise ValueError(f"--buckets must be positive seconds (got {raw!r})")
    return values


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    if args.kind == "prometheus-rules":
        from harness.analysis.slo import load_slo
        from harness.exports.prometheus_rules import DEFAULT_BUCKETS_S, render_rules

        text = render_rules(load_slo(args.slo), _buckets(args.buckets) or DEFAULT_BUCKETS_S)
        _emit(text, args.out)
        for line in text.splitlines():
            if line.startswith("# skipped: "):
                print(f"harness export: {line[2:]}", file=sys.stderr)
    elif args.kind == "alertmanager":
        from harness.exports.alertmanager import render_alertmanager

        _emit(render_alertmanager(args.page_url, args.ticket_url), args.out)
    else:
        from harness.exports.grafana import write_grafana

        for path in write_grafana(args.out, args.prometheus_url):
            print(f"wrote {path}")
    return 0
