"""Quantities derived from a run's facts that several rules judge: how busy the service's
workers were, whether a stage computes or waits, whether the machine was contended,
which input classes are slow, the service's CPU per request. Pure functions of ``Facts``."""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.diagnosis.eventloop import LoopFacts
from harness.analysis.diagnosis.facts import Facts, ProcessFacts, StageFacts, TagFacts
from harness.analysis.rules.thresholds import (
    AWAIT_LOOP_BUSY_MAX,
    BUSY_SATURATED,
    DROPPED_ERROR,
    IDLE_PROCESS_PCT,
    LOADGEN_SATURATED_SHARE,
    LOOP_BUSY_SATURATED,
    LOOP_MIN_SAMPLES,
    MACHINE_OTHER_SHARE,
    MACHINE_SYSTEM_PCT,
    ONCPU_MIN_SAMPLES,
    ONCPU_WAITING,
    RATE_SHORTFALL,
    TAG_MIN_COUNT,
    TAG_P99_MIN_US,
    TAG_P99_RATIO,
    TAIL_BURST_CONCENTRATION,
    TAIL_BURST_MIN_VALUES,
    TAIL_BURST_SHARE,
    WORKER_CPU_SATURATED,
)

__all__ = ["Busy", "awaited_us", "busy_fraction", "busy_processes", "class_p99",
           "machine_slows", "overloaded", "saturated_processes", "service_saturated",
           "cpu_per_request_ms", "is_slow_class", "loop_of", "machine_contended",
           "oncpu_ratio", "reference_class", "serving_processes", "service_share",
           "slow_classes", "tail_in_contention"]


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
    if wall_s * p.rate_hz < ONCPU_MIN_SAMPLES:  # too few samples: the ratio is noise
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
    if tail < TAIL_BURST_MIN_VALUES or values == 0:
        return None
    share = tail_hot / tail
    return share if share >= TAIL_BURST_SHARE \
        and share >= TAIL_BURST_CONCENTRATION * values_hot / values else None


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


def reference_class(rows: list[TagFacts]) -> TagFacts:
    """The class others are judged against: ``production``, else the most frequent."""
    return next((t for t in rows if t.value == "production"), max(rows, key=lambda t: t.count))


def classes_by_key(f: Facts) -> dict[str, list[TagFacts]]:
    by_key: dict[str, list[TagFacts]] = {}
    for t in f.tags:
        by_key.setdefault(t.key, []).append(t)
    return by_key


def slow_classes(f: Facts) -> list[tuple[TagFacts, TagFacts]]:
    """(slow class, its reference class) for every tag key of the traffic."""
    out = []
    for rows in classes_by_key(f).values():
        ref = reference_class(rows)
        out += [(t, ref) for t in rows if t is not ref and is_slow_class(t, ref)]
    return out


def cpu_per_request_ms(f: Facts) -> float | None:
    """The service tree's CPU time per request (psutil), ms; None when unknown."""
    if not f.service_cpu_mean_pct or not f.achieved_rps:
        return None
    return f.service_cpu_mean_pct / 100.0 / f.achieved_rps * 1000.0


def serving_processes(f: Facts) -> list[ProcessFacts]:
    """The service's processes that serve requests: not helpers, using CPU under load.

    Workers (children of the top process) when there are any: the top process of a
    gunicorn or uvicorn tree only supervises them; but it is kept too when it does real
    work itself (MLServer's front process parses and dispatches every request).
    """
    active = [p for p in f.processes if not p.helper and p.cpu_mean_pct >= IDLE_PROCESS_PCT]
    workers = [p for p in active if p.role == "service_worker"]
    if not workers:
        return active
    top = [p for p in active if p.role != "service_worker"
           and p.cpu_mean_pct >= min(w.cpu_mean_pct for w in workers) / 2]
    return top + workers


def loop_of(f: Facts, pid: int) -> LoopFacts | None:
    """The event loop of one process, when the profile has one with enough samples (a
    profile of one process has no process frame: its loop belongs to the only process)."""
    if f.profile is None:
        return None
    loops = [lf for lf in f.profile.loops if lf.ticks >= LOOP_MIN_SAMPLES
             and (lf.pid == pid or (lf.pid is None and len(f.processes) == 1))]
    return loops[0] if loops else None


@dataclass(frozen=True)
class Busy:
    """How busy one serving process was: its CPU (psutil, % of a core) and its event
    loop's running share (profile; running or runnable, so a CPU it waits for counts)."""

    process: ProcessFacts
    cpu: float
    loop: float | None

    @property
    def share(self) -> float:
        return max(self.cpu, self.loop or 0.0)


def busy_processes(f: Facts) -> list[Busy]:
    """Every serving process with its busy share."""
    out = []
    for p in serving_processes(f):
        lf = loop_of(f, p.pid)
        out.append(Busy(p, p.cpu_mean_pct / 100.0, lf.busy_share if lf else None))
    return out


def awaited_us(f: Facts) -> float | None:
    """Mean time per request an async service spends neither running on its loop nor
    queued for it: awaiting I/O, or outside the service. None without a loop profile.

    Per loop, U is its busy share (callbacks running or blocked) and X its throughput (the
    run's rate split evenly between the loops); S = U / X is the loop time per request and
    S / (1 - U) the M/M/1 time in the service if requests only computed and queued. The
    rest of the client's mean latency went by with the loop idle.
    """
    if f.profile is None or f.client is None or not f.achieved_rps:
        return None
    loops = [lf for lf in f.profile.loops if lf.ticks >= LOOP_MIN_SAMPLES]
    roles = {p.pid: p.role for p in f.processes}
    if not loops or len({roles.get(lf.pid or -1) for lf in loops}) > 1:
        return None  # loops in a front process and its workers: a pipeline, not parallel
    u = sum(lf.busy_share + (lf.blocked_share or 0.0) for lf in loops) / len(loops)
    if u >= AWAIT_LOOP_BUSY_MAX:
        return 0.0  # a saturated loop: the wait is its queue
    cpu = {p.pid: p.cpu_mean_pct / 100.0 for p in f.processes}
    if all(cpu.get(lf.pid or -1, 0.0) >= WORKER_CPU_SATURATED / 100.0 for lf in loops):
        # the loops' processes at a full core (psutil): the GIL lets the loop run no more,
        # whatever share the sampled loop thread showed; the wait is the queue for the CPU
        return 0.0
    s_us = u / (f.achieved_rps / len(loops)) * 1e6
    return max(0.0, f.client.mean_us - s_us / (1.0 - u))


def _saturated(b: Busy) -> bool:
    return b.cpu >= WORKER_CPU_SATURATED / 100.0 or (b.loop or 0.0) >= LOOP_BUSY_SATURATED


def saturated_processes(f: Facts) -> list[Busy]:
    """The saturated processes every request passes: a front process (one that serves
    requests itself) that is saturated, or the workers when all of them are on average."""
    procs = busy_processes(f)
    front = [b for b in procs if b.process.role != "service_worker" and _saturated(b)]
    workers = [b for b in procs if b.process.role == "service_worker"]
    if workers and sum(b.share for b in workers) / len(workers) >= min(
            WORKER_CPU_SATURATED / 100.0, LOOP_BUSY_SATURATED):
        return front + workers
    return front


def service_saturated(f: Facts) -> bool:
    """The service was busy all the time: by the utilization law over its own time
    (Server-Timing or traces), or by its processes' CPU and event loops."""
    busy = busy_fraction(f)
    return (busy is not None and busy >= BUSY_SATURATED) or bool(saturated_processes(f))


def machine_slows(f: Facts, stage: str) -> bool:
    """Whether a CPU-contended machine explains a stage's time: a stage that computes (or
    that the profile cannot judge) is preempted at random; in an async service any stage,
    as an awaited call resumes only when the starved event loop gets to it (and a local
    store's own process is starved too). A waiting stage of a threaded service keeps its
    time: a CPU-starved machine does not make a sleep longer."""
    contended = machine_contended(f) or tail_in_contention(f, stage) is not None
    ratio = oncpu_ratio(f, stage)
    is_async = f.profile is not None and bool(f.profile.loops)
    return contended and (is_async or ratio is None or ratio > ONCPU_WAITING)


def overloaded(f: Facts) -> bool:
    """Open model: the service did not keep up with the rate. The schedule dropped requests
    because every user of the pool was waiting for an answer (Little's law: the pool is
    what was in flight), and the load generator itself was not saturated."""
    if f.model != "open" or not f.target_rps or f.achieved_rps is None or not f.scheduled:
        return False
    return (f.achieved_rps < RATE_SHORTFALL * f.target_rps
            and (f.dropped or 0) / f.scheduled >= DROPPED_ERROR
            and (f.loadgen_saturated_share or 0.0) <= LOADGEN_SATURATED_SHARE)
