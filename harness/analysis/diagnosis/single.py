"""Rules about one run, in the order an experienced engineer checks them.

1. measurement validity, 2. infrastructure (CPU, memory, workers, queueing, the
machine), 3. upstream stages, 4. the model, 5. serialization, 6. the input data.
Each rule is a pure function ``Facts -> list[Finding]``; thresholds are module
constants, documented with their calibration in docs/diagnose.md.
"""

from __future__ import annotations

from harness import stats
from harness.analysis.diagnosis.facts import Facts, Finding, StageFacts, TagFacts, stage_layer

__all__ = ["RULES", "busy_fraction", "machine_contended", "oncpu_ratio", "service_share"]

LOADGEN_SATURATED_SHARE = 0.10   # as the self-check: >90 % of a core in >10 % of samples
RATE_SHORTFALL = 0.95
DELAY_SHARE = 0.10               # schedule delay worth a warning (share of corrected latency)
MACHINE_SYSTEM_PCT = 85.0        # the machine counts as busy from here (mean of all cores)
MACHINE_OTHER_SHARE = 0.20       # ... when processes other than service + loadgen take this
BUSY_SATURATED = 0.85            # workers busy this share of the time: no spare capacity
WORKER_CPU_SATURATED = 85.0      # mean % of one core of a single-threaded worker
SERVICE_CPU_SATURATED = 0.90     # service tree CPU / all cores
IMBALANCE_SHARE = 0.70           # the busiest worker's share of all workers' CPU
IMBALANCE_MIN_CPU = 50.0         # ... only once the workers use half a core together
RSS_GROWTH_BYTES = 20 * 2**20
RSS_GROWTH_FRACTION = 0.05
RSS_FIT_R2 = 0.7
RESIDUAL_INFO, RESIDUAL_WARNING, RESIDUAL_BUSY = 0.30, 0.50, 0.60
# shares of the service's own time (app), not of the client time
STAGE_WARNING = {"upstream": 0.30, "serialization": 0.10, "infrastructure": 0.30}
STAGE_INFO = {"upstream": 0.10, "serialization": 0.03, "infrastructure": 0.10, "model": 0.30}
TAIL_RATIO, TAIL_OF_CLIENT, TAIL_MIN_US = 5.0, 0.30, 1000
UNATTRIBUTED_WARNING = 0.30
TAG_MIN_COUNT, TAG_P99_RATIO, TAG_P99_MIN_US, TAG_FAIL_PCT = 30, 2.0, 5000, 5.0
FAILURE_PCT = 1.0
FAILURE_CRITICAL_PCT = 5.0  # latency of the survivors no longer describes the service
ONCPU_COMPUTE, ONCPU_WAITING = 0.6, 0.3


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000.0:.3f} ms"


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f} %"


def busy_fraction(f: Facts) -> float | None:
    """Share of the time the service's request slots were busy (utilization law: X * S / c).

    Throughput times the mean service time is the mean number of requests in service;
    divided by the slots (workers x threads) it is how busy they were. Near 1, arrivals
    find every slot taken and wait in the listen backlog: that wait is the residual.
    """
    service = f.app.mean_us if f.app else sum(s.mean_us for s in f.stages.values()) or None
    if not service or not f.concurrency or not f.achieved_rps:
        return None
    return f.achieved_rps * service / 1e6 / f.concurrency


def oncpu_ratio(f: Facts, stage: str) -> float | None:
    """On-CPU seconds of a stage (profile) / its wall seconds (Server-Timing), or None.

    Near 1 the stage computes; near 0 it waits (I/O, a lock, the GIL, or a CPU it does not
    get on a busy machine). Needs the profile's stage map to use the Server-Timing names.
    """
    p, st = f.profile, f.stages.get(stage)
    if p is None or st is None or not p.rate_hz or stage not in p.oncpu or f.duration_s <= 0:
        return None
    wall_s = st.mean_us * st.count / 1e6 * min(1.0, p.window_s / f.duration_s)
    # under 10 samples' worth of stage time the ratio is noise: a computing stage with 1
    # expected sample (0.05 s at 20 Hz) read 0, "waiting", 37 % of the time
    if wall_s * p.rate_hz < 10:
        return None
    return min(1.0, p.oncpu[stage] / p.rate_hz / wall_s)


def service_share(f: Facts, st: StageFacts) -> float:
    """A stage's share of the service time (``app``, else the sum of the stages)."""
    total = f.app.share if f.app else sum(s.share for s in f.stages.values())
    return st.share / total if total > 0 else 0.0


def machine_contended(f: Facts) -> bool:
    """Other processes take a large share of a busy machine (the service is starved)."""
    if f.system_cpu_mean_pct is None or f.system_cpu_mean_pct < MACHINE_SYSTEM_PCT:
        return False
    other = f.system_cpu_mean_pct / 100.0 - f.machine_share.get("service", 0.0) \
        - f.machine_share.get("loadgen", 0.0)
    return other >= MACHINE_OTHER_SHARE


def tail_in_contention(f: Facts, stage: str) -> float | None:
    """The stage's tail sits in the seconds when other processes crowded the machine.

    A window's mean system CPU hides a burst: 10 s of 100 % among 60 s of 60 % averages
    under the busy threshold, yet a computing stage preempted in those 10 s gets a tail.
    The share of the tail in contended intervals (machine busy and others taking
    MACHINE_OTHER_SHARE) when at least half of the values at or above the stage's p99 fell
    there and the tail is at least twice as concentrated there as the stage's values are;
    else None.
    """
    per = f.stage_tail_intervals.get(stage)
    if not per or not f.interval_machine:
        return None
    values = tail = values_hot = tail_hot = 0
    for t, n, top in per:
        values += n
        tail += top
        m = f.interval_machine.get(t)
        if m is not None and m[0] >= MACHINE_SYSTEM_PCT and m[1] >= MACHINE_OTHER_SHARE:
            values_hot += n
            tail_hot += top
    if tail < 5 or values == 0:
        return None
    share = tail_hot / tail
    return share if share >= 0.5 and share >= 2 * values_hot / values else None


def measurement(f: Facts) -> list[Finding]:
    out = []
    busy = busy_fraction(f)
    saturated = f.loadgen_saturated_share
    if saturated is not None and saturated > LOADGEN_SATURATED_SHARE:
        out.append(Finding(
            "critical", "measurement", "the load generator is CPU-saturated: latency includes "
            "its own queueing",
            [f"a load generator process was above 90 % of one core in "
             f"{_pct(saturated)} of samples (limit "
             f"{_pct(LOADGEN_SATURATED_SHARE)}; resources.csv)",
             f"its mean CPU {f.loadgen_cpu_mean_pct:.1f} % of a core"],
            ["run with --workers N (Locust worker processes) or fewer users",
             "use FastHttpUser and keep work out of the locustfile's tasks"], 1.0))
    if f.model == "open" and f.target_rps and f.achieved_rps is not None \
            and f.achieved_rps < RATE_SHORTFALL * f.target_rps:
        service_bound = busy is not None and busy >= BUSY_SATURATED
        out.append(Finding(
            "warning" if service_bound else "critical", "measurement",
            f"target rate not achieved: {f.achieved_rps:.1f} of {f.target_rps:g} req/s",
            [f"achieved {_pct(f.achieved_rps / f.target_rps)} of the target (limit "
             f"{_pct(RATE_SHORTFALL)}; load.json)",
             f"{f.dropped or 0} of {f.scheduled or 0} scheduled requests never started, "
             f"{f.late or 0} started late"]
            + (["the service's workers were busy all the time (see saturation): the users "
                "waited for it; latency is still measured from the intended start"]
               if service_bound else []),
            ["see the saturation finding" if service_bound else
             "raise --users (the pool that carries the schedule) or add --workers"],
            1.0 if not service_bound else 0.5))
    elif f.model == "open" and f.schedule_delay_share > DELAY_SHARE \
            and (busy is None or busy < BUSY_SATURATED):
        out.append(Finding(
            "warning", "measurement", "requests started late: the load generator lagged "
            "its schedule",
            [f"the mean schedule delay is {_pct(f.schedule_delay_share)} of the corrected "
             f"latency (limit {_pct(DELAY_SHARE)}); {f.late or 0} of {f.started or 0} late"],
            ["raise --users or add --workers"], f.schedule_delay_share))
    if f.client is not None:
        need = stats.min_samples_for_percentile(99)
        if f.client.count < need:
            out.append(Finding(
                "warning", "measurement", f"too few samples for p99: {f.client.count}",
                [f"{f.client.count} successful requests; a 95 % upper bound of p99 needs "
                 f">= {need}"], ["run longer or at a higher rate"], 0.0))
    for check in f.self_check:
        if not check["ok"] and check["severity"] == "error" and check["check"] in (
                "run_complete", "out_of_range", "negative_residuals", "measured_data"):
            out.append(Finding("warning", "measurement", f"self-check failed: {check['check']}",
                               [check["detail"] + " (summary self-check)"],
                               ["read the run's summary: harness summary RUN"], 0.0))
    return out


def machine(f: Facts) -> list[Finding]:
    system = f.system_cpu_mean_pct
    if system is None or system < MACHINE_SYSTEM_PCT:
        return []
    svc, gen = f.machine_share.get("service", 0.0), f.machine_share.get("loadgen", 0.0)
    other = max(0.0, system / 100.0 - svc - gen)
    evidence = [f"system CPU {system:.1f} % of {f.cpu_count} cores (mean over the window; "
                f"resources.csv)",
                f"share of the machine: service {_pct(svc)}, load generator {_pct(gen)}, "
                f"other processes {_pct(other)}"]
    if other >= MACHINE_OTHER_SHARE:
        return [Finding(
            "warning", "measurement", "the machine is CPU-saturated and other processes take "
            f"{_pct(other)} of it", evidence +
            ["the service and the load generator wait for CPU: every stage is slower than on "
             "a quiet machine, and queueing grows with it"],
            ["rerun on a quiet or dedicated machine before trusting absolute latencies",
             "compare runs made under the same conditions only"], 0.0, {"other": other})]
    return [Finding(
        "critical" if svc >= SERVICE_CPU_SATURATED * 0.9 else "warning", "infrastructure",
        "the machine's CPUs are saturated by the service and its load", evidence,
        ["give the service more cores, or put the load generator on another machine"], svc)]


def infrastructure(f: Facts) -> list[Finding]:
    out = []
    busy = busy_fraction(f)
    residual = f.residual.share if f.residual else 0.0
    worker_cpu = [w.cpu_mean_pct for w in f.workers]
    cpu_bound = bool(worker_cpu) and min(worker_cpu) >= WORKER_CPU_SATURATED
    if busy is not None and busy >= BUSY_SATURATED:
        evidence = [f"{f.achieved_rps:.1f} req/s x {_ms(f.app.mean_us if f.app else None)} "
                    f"mean service time / {f.concurrency} worker slots = "
                    f"{_pct(min(busy, 1.0))} busy (limit {_pct(BUSY_SATURATED)})"]
        if f.residual:
            evidence.append(f"residual (queueing before the service) {_pct(residual)} of the "
                            f"latency, mean {_ms(f.residual.mean_us)}, p99 "
                            f"{_ms(f.residual.p99_us)}")
        if worker_cpu:
            evidence.append("worker CPU (% of one core): " + ", ".join(
                f"{c:.0f}" for c in worker_cpu) + (" — CPU-bound" if cpu_bound else
                                                   " — below a full core: they also wait"))
        if f.model == "open" and f.target_rps:
            evidence.append(f"achieved {f.achieved_rps:.1f} of {f.target_rps:g} req/s")
        dominant = max(f.stages.values(), key=lambda s: s.share, default=None)
        if dominant is not None:
            evidence.append(f"the service's time goes mostly to '{dominant.name}' "
                            f"({stage_layer(dominant.name)}): "
                            f"{_pct(service_share(f, dominant))} of it")
        out.append(Finding(
            "critical", "infrastructure", "the service is saturated: too few workers for "
            "the load, requests queue", evidence,
            ["add workers or threads (--service-workers), or lower the rate",
             "find the capacity: the highest rate that keeps the busy share below 80 %",
             "make each request cheaper (the largest stage below)"],
            min(1.0, residual + f.schedule_delay_share),
            {"busy": busy, "dominant_stage": dominant.name if dominant else None}))
    elif residual >= RESIDUAL_INFO and f.residual is not None:
        # On a machine where other processes take the CPU, the workers are slow because
        # they wait for it, and queueing follows: the machine finding already says so.
        warn = residual >= RESIDUAL_WARNING and busy is not None and busy >= RESIDUAL_BUSY \
            and not machine_contended(f)
        out.append(Finding(
            "warning" if warn else "info", "infrastructure",
            f"queueing: {_pct(residual)} of the latency is outside the service's own timing",
            [f"residual mean {_ms(f.residual.mean_us)}, p99 {_ms(f.residual.p99_us)}",
             f"workers busy {_pct(busy)} of the time" if busy is not None
             else "worker busy share unknown"],
            ["requests wait for a free worker when they arrive together: add workers or "
             "threads", "check the network and the WSGI server's accept queue"],
            residual, {"busy": busy}))
    total = f.service_cpu_mean_pct
    if total is not None and total >= SERVICE_CPU_SATURATED * 100.0 * f.cpu_count:
        out.append(Finding(
            "critical", "infrastructure", "the service uses every CPU of the machine",
            [f"service tree CPU {total:.0f} % of {f.cpu_count} cores x 100 %"],
            ["more cores, or a cheaper model path"], 0.5))
    if len(f.workers) >= 2 and sum(worker_cpu) >= IMBALANCE_MIN_CPU:
        top = max(f.workers, key=lambda w: w.cpu_mean_pct)
        share = top.cpu_mean_pct / sum(worker_cpu)
        if share >= IMBALANCE_SHARE:
            out.append(Finding(
                "warning", "infrastructure",
                f"worker imbalance: pid {top.pid} does {_pct(share)} of the work",
                ["worker CPU (% of one core): " + ", ".join(
                    f"{w.pid}: {w.cpu_mean_pct:.0f}" for w in f.workers)],
                ["check the load balancing in front of the workers (SO_REUSEPORT, keep-alive "
                 "connections pinned to one worker)"], share - 1.0 / len(f.workers)))
    if f.rss_slope_bytes_per_s is not None and f.rss_fit_r2 is not None and f.rss_start_bytes:
        grown = f.rss_slope_bytes_per_s * f.duration_s
        if grown >= RSS_GROWTH_BYTES and grown >= RSS_GROWTH_FRACTION * f.rss_start_bytes \
                and f.rss_fit_r2 >= RSS_FIT_R2:
            out.append(Finding(
                "warning", "infrastructure",
                f"memory grows steadily: {grown / 2**20:.1f} MiB over the run",
                [f"service RSS slope {f.rss_slope_bytes_per_s / 2**20 * 60:.1f} MiB/min "
                 f"(r² {f.rss_fit_r2:.2f}) from {f.rss_start_bytes / 2**20:.0f} MiB"],
                ["run longer to see if it levels off; look for unbounded caches"], 0.2))
    return out


def _stage_finding(f: Facts, st: StageFacts, layer: str) -> list[Finding]:
    out = []
    label = {"upstream": "feature fetch / upstream", "model": "inference",
             "serialization": "serialization"}.get(layer, "service stage")
    evidence = [f"stage '{st.name}' mean {_ms(st.mean_us)}, p50 {_ms(st.p50_us)}, p99 "
                f"{_ms(st.p99_us)}; {_pct(st.share)} of the summed client time (Server-Timing)"]
    ratio = oncpu_ratio(f, st.name)
    if ratio is not None:
        kind = ("on-CPU: it computes" if ratio >= ONCPU_COMPUTE else
                "mostly waiting (I/O, lock, GIL, or CPU it does not get)"
                if ratio <= ONCPU_WAITING else "partly on-CPU, partly waiting")
        evidence.append(f"profile: {_pct(ratio)} of its wall time on-CPU — {kind}")
        tops = (f.profile.top_self.get(st.name) if f.profile else None) or []
        if tops:
            evidence.append("hottest functions: " + "; ".join(
                f"{fn} ({n} samples)" for fn, n in tops[:3]))
    warn = STAGE_WARNING.get(layer)
    info = STAGE_INFO.get(layer, 1.0)
    # Judged as a share of the service's own time: queueing in front of the service (the
    # residual) and a CPU-starved machine inflate the client time without changing it.
    of_service = service_share(f, st)
    evidence[0] += f"; {_pct(of_service)} of the service time"
    steps = {"upstream": ["look at the feature store's latency and connection pool",
                          "cache hot entities; batch lookups"],
             "model": ["profile the model path (profile/oncpu.speedscope.json)",
                       "compare with the previous model version: harness diagnose RUN "
                       "--baseline OLD"],
             "serialization": ["check the response size and the encoder (orjson, no indent, "
                               "no debug fields)"]}.get(layer, [f"instrument '{st.name}'"])
    if warn is not None and of_service >= warn:
        out.append(Finding("warning", layer, f"{label} takes {_pct(st.share)} of the latency",
                           evidence, steps, st.share, {"stage": st.name, "oncpu": ratio}))
    elif of_service >= info:
        out.append(Finding("info", layer, f"{label} ('{st.name}') is {_pct(st.share)} of the "
                           "latency", evidence, steps, st.share,
                           {"stage": st.name, "oncpu": ratio}))
    client_p99 = f.client.p99_us if f.client else None
    if st.p50_us and st.p99_us and client_p99 and st.p99_us >= TAIL_RATIO * st.p50_us \
            and st.p99_us >= TAIL_OF_CLIENT * client_p99 and st.p99_us - st.p50_us >= TAIL_MIN_US:
        # A CPU-starved machine preempts computing stages at random: their tail is then the
        # machine's (see its finding); a waiting stage's tail stays the stage's own.
        in_bursts = tail_in_contention(f, st.name)
        machine_tail = (machine_contended(f) or in_bursts is not None) \
            and (ratio is None or ratio > ONCPU_WAITING)
        evidence = [f"'{st.name}' p99 {_ms(st.p99_us)} vs p50 {_ms(st.p50_us)}; client p99 "
                    f"{_ms(client_p99)} ({_pct(st.p99_us / client_p99)} of it)"]
        if in_bursts is not None:
            evidence.append(f"{_pct(in_bursts)} of its values above p99 fell in seconds when "
                            f"the machine was busy (>= {MACHINE_SYSTEM_PCT:.0f} %) and other "
                            f"processes took >= {_pct(MACHINE_OTHER_SHARE)} of it "
                            "(resources.csv against the interval histograms)")
        out.append(Finding(
            "info" if machine_tail else "warning", layer,
            f"{label} has a long tail: p99 {st.p99_us / st.p50_us:.1f}x its p50",
            evidence,
            steps, min(1.0, st.p99_us / client_p99) * 0.5, {"stage": st.name}))
    return out


def stages(f: Facts) -> list[Finding]:
    out = []
    for st in f.stages.values():
        out += _stage_finding(f, st, stage_layer(st.name))
    if f.app is not None and f.stages:
        inner = sum(s.share for s in f.stages.values())
        gap = f.app.share - inner
        if gap >= UNATTRIBUTED_WARNING:
            out.append(Finding(
                "warning", "infrastructure", f"{_pct(gap)} of the latency is inside the service "
                "but in no named stage", [f"app share {_pct(f.app.share)}, named stages "
                                          f"{_pct(inner)} (Server-Timing)"],
                ["add Server-Timing entries for the unnamed part (parsing, validation, "
                 "locks)"], gap))
    if f.model_versions:
        out.append(Finding("info", "model", "model versions served: " + ", ".join(
            f"{k} {v}" for k, v in sorted(f.model_versions.items())),
            ["run.json target models / service options"], [], 0.0,
            {"versions": dict(f.model_versions)}))
    return out


def class_p99(t: TagFacts, ref: TagFacts) -> tuple[bool, int | None, int | None]:
    """(judged on the service's own time?, class p99, reference p99) in µs.

    The service's own time per class when the service sends it: in a queue, one class's
    slow requests delay every class's client time alike.
    """
    own = bool(t.service_p99_us and ref.service_p99_us)
    return (own, t.service_p99_us, ref.service_p99_us) if own else (own, t.p99_us, ref.p99_us)


def is_slow_class(t: TagFacts, ref: TagFacts) -> bool:
    _, tp, rp = class_p99(t, ref)
    return bool(t.count >= TAG_MIN_COUNT and tp and rp and tp >= TAG_P99_RATIO * rp
                and tp - rp >= TAG_P99_MIN_US)


def slow_classes(f: Facts) -> list[tuple[TagFacts, TagFacts]]:
    """(slow class, its reference class) for every tag key of the traffic."""
    out = []
    by_key: dict[str, list[TagFacts]] = {}
    for t in f.tags:
        by_key.setdefault(t.key, []).append(t)
    for rows in by_key.values():
        ref = next((t for t in rows if t.value == "production"), max(rows, key=lambda t: t.count))
        out += [(t, ref) for t in rows if t is not ref and is_slow_class(t, ref)]
    return out


def input_data(f: Facts) -> list[Finding]:
    out = []
    by_key: dict[str, list] = {}
    for t in f.tags:
        by_key.setdefault(t.key, []).append(t)
    for key, rows in by_key.items():
        ref = next((t for t in rows if t.value == "production"), max(rows, key=lambda t: t.count))
        odd = [t for t in rows if t is not ref]
        if odd:
            share = sum(t.traffic_share for t in odd)
            nulls = sum(t.traffic_share for t in odd if "null" in t.value)
            out.append(Finding(
                "info", "input data", f"{_pct(share)} of the traffic is not '{ref.value}' "
                f"({key})", [", ".join(f"{t.value} {_pct(t.traffic_share)}" for t in rows)]
                + ([f"null-feature classes: {_pct(nulls)} of the traffic"] if nulls else []),
                [], 0.0, {"key": key, "shares": {t.value: t.traffic_share for t in rows}}))
        for t in odd:
            if t.count < TAG_MIN_COUNT:
                continue
            own, tp, rp = class_p99(t, ref)
            if is_slow_class(t, ref) and tp and rp:
                what = "service time p99" if own else "p99"
                out.append(Finding(
                    "warning", "input data", f"input class {t.value} is slow: {what} "
                    f"{tp / rp:.1f}x '{ref.value}'",
                    [f"{t.tag}: {what} {_ms(tp)}, {t.count} requests; {ref.tag}: {what} "
                     f"{_ms(rp)}"] + ([f"client p99 {_ms(t.p99_us)} vs {_ms(ref.p99_us)}: "
                                       "the queue behind the slow class delays every class"]
                                      if own else []),
                    ["look at what this class does to the cost (batch size, feature "
                     "defaults, out-of-range paths)"], t.traffic_share))
            if t.fail_pct >= TAG_FAIL_PCT:
                out.append(Finding(
                    "warning", "input data", f"input class {t.value} fails "
                    f"{t.fail_pct:.1f} % of its requests",
                    [f"{t.tag}: {t.fail_pct:.1f} % failed of {t.count}; {ref.tag}: "
                     f"{ref.fail_pct:.1f} %"],
                    ["check whether the service should accept or cleanly reject this input"],
                    t.traffic_share * t.fail_pct / 100.0))
    if f.requests and 100.0 * f.failures / f.requests >= FAILURE_PCT:
        pct = 100.0 * f.failures / f.requests
        top = sorted(f.errors.items(), key=lambda kv: -kv[1])[:3]
        client_side = top and all(" 4" in f" {e}" or "HTTP 4" in e for e, _ in top)
        out.append(Finding(
            "critical" if pct >= FAILURE_CRITICAL_PCT else "warning",
            "input data" if client_side else "infrastructure",
            f"{pct:.1f} % of requests failed",
            [f"{f.failures} of {f.requests}; " + ", ".join(f"{e}: {n}" for e, n in top)],
            ["read service.log for the failing requests"], pct / 100.0))
    return out


RULES = (measurement, machine, infrastructure, stages, input_data)
