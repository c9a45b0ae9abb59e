"""The traces collector: an OTLP receiver for the run, and after the load, the join.

``harness run --traces`` starts it before the target (``at="target"``), so a service the
harness starts gets the receiver's endpoint in its environment (the reference service
exports OTLP itself with ``REFSVC_TRACING=otlp``) and a service it does not start can be
pointed at it (the endpoint and variables are printed; ``--traces-listen`` fixes them
before the run). The load driver sends ``traceparent`` on every request and records the
sampled ones (harness/load/tracecontext.py).

After the load, ``stop()`` waits for the spans still in the service's exporter (batch
processors send every few seconds): until every recorded request's server span has arrived,
or spans stopped arriving for ``quiet_s``, or ``grace_s`` passed. Then it joins, writes the
stage series (traces/series.py) and ``traces/status.json``, and stops the receiver.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.traces.join import JoinCounts, Joined, RequestRecord, join_request
from harness.run.collectors.traces.listen import parse_listen
from harness.run.collectors.traces.series import write_trace_series
from harness.run.collectors.traces.spanmap import SpanMap, load_span_map
from harness.run.collectors.traces.spans import SpanStore
from harness.rundir import clock, write_json_atomic
from harness.units import parse_duration

if TYPE_CHECKING:  # the receiver (gRPC, protobuf) is imported when a run has --traces
    from harness.run.collectors.traces.receiver import OtlpReceiver

__all__ = ["SPEC", "TracesCollector", "TracesOptions"]

MAX_RECORD_LINES = 5_000_000


@dataclass(frozen=True)
class TracesOptions:
    """``listen``: HOST:PORT for gRPC (HTTP on PORT+1), else free ports of 127.0.0.1;
    ``sample``: share of requests sent sampled; ``grace_s``: the longest wait for late spans
    after the load; ``quiet_s``: stop waiting once no span came for this long (and at least
    one did; longer than the OpenTelemetry SDK's default export interval, 5 s, after which
    a batch processor sends what is left in its queue); ``forward``: an OTLP/HTTP
    collector to copy the spans to; ``span_map``: a file (docs/collectors.md);
    ``max_spans``: spans kept at most."""

    listen: str | None = None
    sample: float = 1.0
    grace_s: float = 10.0
    quiet_s: float = 6.0
    forward: str | None = None
    span_map: str | None = None
    max_spans: int = 2_000_000

    def __post_init__(self) -> None:
        if self.listen is not None:
            parse_listen(self.listen)
        if not (isinstance(self.sample, (int, float)) and 0 < self.sample <= 1):
            raise ValueError(f"--traces-sample must be a fraction in (0, 1] (got {self.sample!r})")
        if not 0 <= self.grace_s <= 600:
            raise ValueError(f"--traces-grace must be between 0 and 600 s (got {self.grace_s!r})")
        if not 0 < self.quiet_s <= 60:
            raise ValueError(f"traces quiet_s must be in (0, 60] s (got {self.quiet_s!r})")
        if self.max_spans < 1:
            raise ValueError(f"traces max_spans must be >= 1 (got {self.max_spans!r})")
        if self.span_map is not None:
            load_span_map(self.span_map)  # ValueError names the file, the field and the value


class TracesCollector:
    name = "traces"

    def __init__(self, options: TracesOptions) -> None:
        self.options = options
        self.span_map: SpanMap = load_span_map(options.span_map)
        from harness.run.collectors.traces.receiver import OtlpReceiver

        host, port = parse_listen(options.listen) if options.listen else ("127.0.0.1", 0)
        self.receiver = OtlpReceiver(host, port, store=SpanStore(options.max_spans),
                                     forward_url=options.forward)
        self._ctx: CollectorContext | None = None
        self._status: dict[str, Any] | None = None

    def start(self, ctx: CollectorContext) -> None:
        self._ctx = ctx
        self.receiver.start()  # ReceiverError (a ValueError) names the address in use

    # -- what the rest of the run needs to know (ConfiguresRun) ---------------------------
    def target_env(self) -> dict[str, str]:
        # The reference service exports OTLP itself in this mode; a batch every 200 ms keeps
        # the wait after the load short (the SDK's default is 5 s).
        return {"REFSVC_TRACING": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.grpc_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "200"}

    def driver_config(self) -> dict[str, Any]:
        return {"trace_sample": self.options.sample}

    def announce(self) -> list[str]:
        r = self.receiver
        return [f"traces: OTLP receiver on {r.grpc_endpoint} (gRPC) and {r.http_endpoint} "
                "(HTTP, /v1/traces)",
                f"traces: a service of your own needs OTEL_EXPORTER_OTLP_ENDPOINT={r.grpc_endpoint}"
                f" OTEL_EXPORTER_OTLP_PROTOCOL=grpc (or {r.http_endpoint} with http/protobuf) "
                "OTEL_TRACES_SAMPLER=parentbased_always_on"]

    # -- after the load --------------------------------------------------------------------
    def _records(self) -> tuple[list[RequestRecord], int]:
        assert self._ctx is not None
        records, bad = [], 0
        for path in sorted((self._ctx.run_dir / "traces").glob("requests-*.jsonl")):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for n, line in enumerate(fh):
                        if n >= MAX_RECORD_LINES:
                            bad += 1
                            break
                        try:
                            records.append(RequestRecord.from_dict(json.loads(line)))
                        except (ValueError, TypeError):
                            bad += 1  # a torn last line of a driver that died, say
            except OSError:
                bad += 1
        return records, bad

    def _wait_for_spans(self, client_spans: set[str]) -> float:
        """Wait for the server spans still on their way; the seconds waited.

        A request is waited for until its *server span* (a span whose parent is the client
        span the driver sent) arrived, not any span of its trace: children end first, so
        an exporter's batch often holds a request's inner spans and the next batch its
        server span. ``client_spans`` are the recorded requests' client span ids."""
        store, opts = self.receiver.store, self.options
        began = time.monotonic()
        missing = set(client_spans)
        while time.monotonic() - began < opts.grace_s:
            missing = store.without_child(missing)
            if not missing:
                break
            last = store.last_arrival
            if last is not None and clock.now() - last > opts.quiet_s \
                    and time.monotonic() - began > opts.quiet_s:
                break
            time.sleep(0.2)
        return time.monotonic() - began

    def stop(self) -> dict[str, Any]:
        if self._status is not None:
            return self._status
        if self._ctx is None:
            self._status = {"ok": False, "reason": "the collector was not started"}
            return self._status
        records, bad = self._records()
        waited = self._wait_for_spans({r.span_id for r in records})
        join_cpu = time.thread_time()
        counts = JoinCounts()
        joined: list[Joined] = []
        for rec in records:
            found = join_request(rec, self.receiver.store.trace(rec.trace_id), self.span_map,
                                 counts)
            if found is not None:
                joined.append(found)
        written = write_trace_series(self._ctx.run_dir, joined)
        wanted = {r.trace_id for r in records}
        foreign = len(self.receiver.store.trace_ids() - wanted)
        self.receiver.stop()
        status = {
            "ok": bool(joined), "reason": None if joined else _no_join_reason(records, counts,
                                                                               self.receiver),
            "span_map": self.span_map.name, "grace_waited_s": round(waited, 3),
            "request_records": len(records), "unreadable_records": bad,
            "join": counts.to_dict(), "traces_without_request": foreign,
            "receiver": self.receiver.status(), "series": written,
            "join_cpu_s": round(time.thread_time() - join_cpu, 3),
            "agreement": _agreement(joined, _decided_total(self._ctx.run_dir)),
        }
        write_json_atomic(self._ctx.run_dir / "traces" / "status.json", status)
        self._status = status
        return status


def _no_join_reason(records: list[RequestRecord], counts: JoinCounts,
                    receiver: OtlpReceiver) -> str:
    if not records:
        return "the load driver recorded no traced request"
    if receiver.store.spans == 0:
        return (f"no span arrived at {receiver.grpc_endpoint} / {receiver.http_endpoint}: is the "
                "service exporting OTLP there (OTEL_EXPORTER_OTLP_ENDPOINT)?")
    return (f"spans arrived but none joined a request ({counts.without_server_span} traces had "
            "no span under the client's): does the service continue the incoming traceparent?")


def _decided_total(run_dir: Path) -> str | None:
    """The Server-Timing entry the load driver took for the service's total (load.json)."""
    try:
        decided = json.loads((run_dir / "load.json").read_text()).get("service_total") or {}
    except (OSError, ValueError, AttributeError):
        return None
    name = decided.get("name") if isinstance(decided, dict) else None
    return name if isinstance(name, str) else None


def _agreement(joined: list[Joined], total_name: str | None) -> dict[str, Any] | None:
    """For requests that also carried Server-Timing: how far the trace-derived service time
    and stages are from it (µs), the cross-check of the two sources."""
    diffs: dict[str, list[float]] = {}
    for j in joined:
        st = dict(j.request.server_timing)
        if not st:
            continue
        total = st.get(total_name) if total_name else None
        if total is not None:
            diffs.setdefault("service", []).append(abs(j.server_us - total * 1000))
        for stage, us in j.stages_us.items():
            if stage in st:
                diffs.setdefault(stage, []).append(abs(us - st[stage] * 1000))
    if not diffs:
        return None
    return {k: {"requests": len(v), "max_abs_diff_us": round(max(v), 1),
                "mean_abs_diff_us": round(sum(v) / len(v), 2)} for k, v in sorted(diffs.items())}


def _add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--traces", action="store_true",
                       help="receive the service's OpenTelemetry spans (OTLP) and derive stages "
                            "from them, per request (docs/collectors.md)")
    group.add_argument("--traces-listen", metavar="HOST:PORT",
                       help="OTLP/gRPC on PORT, OTLP/HTTP on PORT+1 (default: free ports on "
                            "127.0.0.1, printed at the start)")
    group.add_argument("--traces-sample", type=float, default=1.0, metavar="FRACTION",
                       help="share of requests sent sampled (default 1.0)")
    group.add_argument("--traces-grace", default="10s", metavar="DURATION",
                       help="longest wait for late spans after the load (default 10s)")
    group.add_argument("--traces-forward", metavar="URL",
                       help="also send the spans to this OTLP/HTTP collector (Jaeger, Tempo...)")
    group.add_argument("--span-map", metavar="FILE",
                       help="which span belongs to which stage (default: by db.system, "
                            "rpc.system, client spans and span names)")


def _from_args(args: argparse.Namespace) -> TracesOptions | None:
    given = [args.traces_listen, args.traces_forward, args.span_map]
    if not args.traces:
        if any(v is not None for v in given) or args.traces_sample != 1.0:
            raise ValueError("--traces-listen, --traces-sample, --traces-forward and --span-map "
                             "need --traces")
        return None
    return TracesOptions(listen=args.traces_listen, sample=args.traces_sample,
                         grace_s=parse_duration(args.traces_grace, what="--traces-grace"),
                         forward=args.traces_forward,
                         span_map=str(Path(args.span_map)) if args.span_map else None)


def _create(opts: TracesOptions, ctx: CollectorContext) -> TracesCollector:
    return TracesCollector(opts)


SPEC = CollectorSpec(name="traces", at="target", options=TracesOptions, create=_create,
                     default_on=False, add_flags=_add_flags, from_args=_from_args,
                     stop_timeout_s=660.0, title="traces (OpenTelemetry)")
