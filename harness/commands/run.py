"""`harness run`: load a service with a locustfile and record a run directory."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.commands import EXIT_USAGE

if TYPE_CHECKING:
    from harness.run import RunOptions, RunResult

NAME = "run"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="load a service with a locustfile and record a run directory",
        description="Load a service with a locustfile and record a run directory. "
        "Arguments after -- go to the locustfile's own options.",
    )
    p.add_argument("scenario", type=Path, help="a locustfile (the project's or your own)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", metavar="URL", help="load a running service at URL")
    where.add_argument(
        "--serve", choices=["reference"], help="start the reference service for this run"
    )
    p.add_argument("--target-remote", action="store_true",
                   help="the --target runs on another host (or must be treated so): do not "
                        "look for its processes here; its CPU and memory come from its "
                        "/metrics process_* and --node-metrics")
    _add_load_flags(p.add_argument_group("load model (closed: --users; open: --rate)"))
    _add_serve_flags(p.add_argument_group("--serve reference options"))
    p.add_argument("--out", type=Path, default=Path("runs"), help="where run directories go")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="label the run (repeatable)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    when_used(p, _add_collector_flags)


def _add_load_flags(load: argparse._ArgumentGroup) -> None:
    load.add_argument("--users", type=int, help="concurrent users (open model: the pool size)")
    load.add_argument("--spawn-rate", type=float, help="users started per second (closed model)")
    load.add_argument("--rate", type=float, help="open model: target arrival rate, requests/s")
    load.add_argument("--rate-shape", metavar="SHAPE",
                      help="open model with a rate over time, e.g. ramp:from=5,to=50,over=60s "
                           "(step, ramp, spike, soak, diurnal: docs/scenarios.md)")
    load.add_argument("--arrival", choices=["poisson", "constant"], default="poisson",
                      help="open model: inter-arrival times (default: poisson)")
    load.add_argument("--duration", default="60s", help="measured time, e.g. 60s, 5m (default 60s)")
    load.add_argument("--warmup", default="2s", help="load before measuring, kept in the time "
                      "series but not in the results: users spawning, connections opening, "
                      "caches filling (default 2s)")
    load.add_argument("--workers", type=int, default=0,
                      help="Locust worker processes (0: load from one process)")
    load.add_argument("--remote-workers", type=int, default=0, metavar="M",
                      help="of --workers, M connect from other hosts with `harness worker "
                           "--master HOST:PORT` (default 0)")
    load.add_argument("--master-bind", metavar="ADDR:PORT",
                      help="where the master listens for workers (default 127.0.0.1 and a "
                           "free port; 0.0.0.0:5557 with --remote-workers)")
    load.add_argument("--expect-workers-timeout", default="60s",
                      help="the run fails unless every worker connects within this "
                           "(default 60s)")
    load.add_argument("--user-class", action="append", default=[], dest="user_classes",
                      help="run only these User classes of the locustfile (repeatable)")
    load.add_argument("--seed", type=int, default=1, help="seed of the arrival schedule")
    load.add_argument("--interval", default="1s", help="histogram interval (default 1s)")
    load.add_argument("--request-timeout", default="10s",
                      help="a request unanswered this long fails as a timeout (default 10s)")
    load.add_argument("--service-total", metavar="NAME",
                      help="the Server-Timing entry that is the service's own total (default: "
                           "inferred from the values: the entry that covers the others)")
    load.add_argument("--start-timeout", default="60s",
                      help="the load must start within this (locustfile import and init, "
                           "workers connected; default 60s)")


def _add_serve_flags(srv: argparse._ArgumentGroup) -> None:
    srv.add_argument("--service-workers", type=int, default=2, help="gunicorn workers (default 2)")
    srv.add_argument("--worker-class", choices=["sync", "gthread"], default="sync")
    srv.add_argument("--threads", type=int, default=1, help="threads per gthread worker")
    srv.add_argument("--store", choices=["sqlite", "redis"], default="sqlite",
                     help="feature store backend (redis: a private redis-server is started)")
    srv.add_argument("--redis-url", help="use this Redis instead of starting one")
    srv.add_argument("--faults", help="fault configuration file (YAML or JSON)")
    srv.add_argument("--model-version", action="append", default=[], metavar="MODEL=VERSION",
                     help="default version of a model, e.g. fraud=v2 (repeatable)")
    srv.add_argument("--port", type=int, default=0, help="service port (default: a free one)")
    srv.add_argument("--record-traffic", action="store_true",
                     help="the service records the traffic it receives into RUN/traffic/ "
                          "(replay format: harness record, harness data)")


def _add_collector_flags(p: argparse.ArgumentParser) -> None:
    from harness.run.collectors import registry

    registry.add_flags(p)


def when_used(parser: argparse.ArgumentParser,
              add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Call ``add(parser)`` just before the parser first parses or prints help or usage.

    Every ``harness`` command builds every subcommand's parser. The collectors' flags come
    from the collector modules, whose imports (psutil, and the run directory's jsonschema
    and numpy) cost 0.1-0.3 s here: `harness --version` or `harness summary RUN` should not
    pay that for flags only `harness run` parses.
    """
    pending = [add]

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def first_use(*args: Any, **kwargs: Any) -> Any:
            while pending:
                pending.pop()(parser)
            return method(*args, **kwargs)
        return first_use

    for name in ("parse_known_args", "_parse_known_args", "format_help", "format_usage"):
        if hasattr(parser, name):
            setattr(parser, name, wrap(getattr(parser, name)))


def handle(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.run import RunError, run

    try:
        options = run_options(args, argv)
    except ValueError as exc:
        print(f"harness run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = _Progress(sys.stderr, options.duration_s, options.warmup_s)
    try:
        result = run(options, on_event=progress)
    except RunError as exc:
        progress.close()
        print(f"harness run: could not run: {exc}", file=sys.stderr)
        if exc.run_dir is not None:
            print(f"run directory (marked failed): {exc.run_dir}", file=sys.stderr)
        return EXIT_USAGE
    try:
        progress.close()
        _print_result(result, args.json)
    except OSError:  # the terminal is gone (a hang-up): the run directory says it all
        pass
    return result.exit_code


def run_options(args: argparse.Namespace, argv: list[str]) -> RunOptions:
    """RunOptions from the parsed arguments; ValueError names the bad one."""
    from harness.run import RunOptions
    from harness.run.collectors import registry
    from harness.run.target import ServeOptions
    from harness.units import parse_duration, parse_tags, parse_versions

    serve_options = ServeOptions(
        workers=args.service_workers, worker_class=args.worker_class, threads=args.threads,
        store=args.store, redis_url=args.redis_url, faults=args.faults,
        versions=parse_versions(args.model_version), port=args.port)
    return RunOptions(
        scenario=args.scenario, target=args.target, serve=args.serve,
        serve_options=serve_options, users=args.users, spawn_rate=args.spawn_rate,
        rate=args.rate, rate_shape=args.rate_shape, arrival=args.arrival,
        duration_s=parse_duration(args.duration, what="duration"),
        warmup_s=parse_duration(args.warmup, what="warmup"),
        interval_s=parse_duration(args.interval, what="interval"),
        request_timeout_s=parse_duration(args.request_timeout, what="request timeout"),
        service_total=args.service_total,
        start_timeout_s=parse_duration(args.start_timeout, what="start timeout"),
        workers=args.workers, remote_workers=args.remote_workers,
        master_bind=args.master_bind,
        expect_workers_timeout_s=parse_duration(args.expect_workers_timeout,
                                                what="expect workers timeout"),
        collectors=registry.options_from_args(args), out=args.out,
        tags=parse_tags(args.tag), user_classes=tuple(args.user_classes), seed=args.seed,
        record_traffic=args.record_traffic,
        target_remote=getattr(args, "target_remote", False),
        locust_args=tuple(args.passthrough),
        command_line=tuple(["harness", *argv]))


def _print_result(result: RunResult, as_json: bool) -> None:
    from harness.analysis.summary import format_summary

    if result.summary is not None:
        if as_json:
            print(json.dumps(result.summary, indent=2))
        else:
            for line in format_summary(result.summary):
                print(line)
    for message in result.messages:
        print(f"harness run: {message}", file=sys.stderr)
    print(f"run directory: {result.run_dir}  (status: {result.status})")


class _Progress:
    """Live progress on a terminal; silent when stderr is not a TTY."""

    def __init__(self, stream: Any, duration_s: float, warmup_s: float) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.total = duration_s + warmup_s
        self.warmup = warmup_s
        self.start: float | None = None
        self.requests = 0
        self.failures = 0
        self.dirty = False

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "run_dir" and self.tty:
            self._line(f"run directory: {event['path']}")
        elif kind == "status" and self.tty:
            self._line(str(event.get("message")))
        elif kind == "announce":  # what the user must act on (an endpoint): tty or not
            self._line(str(event.get("message")))
        elif kind == "started":
            self.start = float(event["load_start"])
        elif kind == "interval" and self.tty and self.start is not None:
            self.requests += int(event.get("requests", 0))
            self.failures += int(event.get("failures", 0))
            elapsed = float(event.get("t", self.start)) + float(event.get("dt", 0)) - self.start
            dt = float(event.get("dt") or 1.0)
            rate = int(event.get("requests", 0)) / dt
            phase = "warm-up " if event.get("warmup") else ""
            p50 = event.get("p50_us")
            p99 = event.get("p99_us")
            lat = (
                f"p50 {p50 / 1000:8.3f} ms  p99 {p99 / 1000:8.3f} ms"
                if p50 is not None and p99 is not None else "p50 -  p99 -"
            )
            text = (
                f"\r[{elapsed:5.0f}/{self.total:.0f} s] {phase}{rate:8.1f} req/s  "
                f"errors {self.failures:6d}  {lat}"
            )
            self.stream.write(text.ljust(90))
            self.stream.flush()
            self.dirty = True

    def _line(self, text: str) -> None:
        if self.dirty:
            self.stream.write("\n")
            self.dirty = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.dirty:
            self.stream.write("\n")
            self.stream.flush()
            self.dirty = False


