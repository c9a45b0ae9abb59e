"""Diagnosis rules of the service's processes, from psutil and the profile alone (no
Server-Timing needed): a service saturated by its processes' CPU or event loops, and an
event loop blocked by synchronous calls.

Registered in the ``single`` book (infrastructure layer, after ``infrastructure``);
thresholds and their reasons: ``harness.analysis.rules.thresholds``.
"""

from __future__ import annotations

from harness.analysis.diagnosis.eventloop import is_own_code
from harness.analysis.diagnosis.facts import Facts, stage_layer
from harness.analysis.diagnosis.measurement import rate_short as _rate_short
from harness.analysis.diagnosis.measures import (
    Busy,
    busy_fraction,
    busy_processes,
    cpu_per_request_ms,
    machine_contended,
    saturated_processes,
)
from harness.analysis.rules import Finding, rule
from harness.analysis.rules.thresholds import (
    BUSY_SATURATED,
    FAILURE_PCT,
    LOOP_BLOCKED_CRITICAL,
    LOOP_BLOCKED_WARNING,
    LOOP_MIN_SAMPLES,
    WAIT_FOR_LOAD,
    WORKER_CPU_SATURATED,
)
from harness.units import fmt_ms_unit as _ms
from harness.units import fmt_pct

__all__: list[str] = []


def _kind(f: Facts, procs: list[Busy]) -> str:
    commands = " ".join(p.command for p in f.processes).lower()
    workers = [b for b in procs if b.process.role == "service_worker"]
    if "mlserver" in commands and not workers:
        return ("MLServer runs the model in its main process (parallel workers off): one "
                "process, one core for every request")
    if not workers:
        what = "uvicorn process" if "uvicorn" in commands else "process"
        loop = "one event loop, " if any(b.loop is not None for b in procs) else ""
        return f"one {what} serves every request ({loop}one core at most)"
    if len(workers) == 1:
        return ("its one worker process serves every request" + (
            " (MLServer parallel_workers 1)" if "mlserver" in commands else ""))
    return f"all {len(workers)} workers are busy"


def _waits(f: Facts) -> tuple[bool, str | None]:
    """Whether the load waits for the service, and the evidence (Little's law when closed)."""
    if f.model != "closed":
        return True, None
    if not f.users or not f.achieved_rps or f.client is None:
        return False, None
    cycle_us = f.users / f.achieved_rps * 1e6
    share = f.client.mean_us / cycle_us
    return share >= WAIT_FOR_LOAD, (
        f"Little's law: {f.users} users / {f.achieved_rps:.1f} req/s = {_ms(cycle_us)} per "
        f"user cycle; the mean latency {_ms(f.client.mean_us)} is {fmt_pct(share)} of it: the "
        "users " + ("mostly wait for the service" if share >= WAIT_FOR_LOAD else "think"))


def _process_line(b: Busy) -> str:
    if b.process.source != "psutil":
        return (f"the process that answered /metrics: {fmt_pct(b.cpu)} of a core "
                f"({b.process.source})")
    name = b.process.command.split(" -m ", 1)[-1].split()[0] if b.process.command else ""
    line = f"pid {b.process.pid}{f' ({name})' if name else ''}: {fmt_pct(b.cpu)} of a core"
    if b.loop is not None:
        line += f", event loop busy {fmt_pct(b.loop)} of the time (running or waiting for a CPU)"
    return line


def _cpu_line(f: Facts) -> str | None:
    p = f.profile
    if p is None or not p.running_total:
        return None
    stage = max(p.running, key=lambda k: p.running[k])
    return (f"its CPU goes mostly to '{stage}' ({stage_layer(stage)}): "
            f"{fmt_pct(p.running_share(stage))} of the on-CPU samples")


@rule("single", "cpu_saturation", layer="infrastructure", uses=("resources", "profile"))
def cpu_saturation(f: Facts) -> Finding | None:
    """The service's processes are busy all the time (CPU, or an event loop that always
    has work) while the load waits: requests queue. Needs no Server-Timing."""
    busy = busy_fraction(f)
    if busy is not None and busy >= BUSY_SATURATED:
        return None  # the utilization-law rule (saturation) says it with the stages
    procs = busy_processes(f)
    hot = saturated_processes(f)
    waits, little = _waits(f)
    if not hot or not waits:
        return None
    by_cpu = any(b.cpu >= WORKER_CPU_SATURATED / 100.0 for b in hot)
    # On a machine others crowd, the processes are busy waiting for a CPU: still saturated
    # (requests queue), a warning beside the machine's, unless it already costs requests.
    overflowing = _rate_short(f) or (f.requests and 100.0 * f.failures / f.requests
                                     >= FAILURE_PCT)
    evidence = [_process_line(b) for b in procs]
    if not by_cpu and machine_contended(f):
        evidence.append(f"they got {fmt_pct(max(b.cpu for b in hot))} of a core at most: the "
                        "machine's other processes took the rest (see the machine finding); "
                        "on a quiet machine the same processes serve more")
    cpu_ms = cpu_per_request_ms(f)
    if cpu_ms and f.achieved_rps:
        evidence.append(f"{f.achieved_rps:.1f} req/s x {cpu_ms:.2f} ms of CPU per request "
                        f"({f.service_cpu_source}) = {f.achieved_rps * cpu_ms / 1000:.2f} cores "
                     "of work")
    evidence += [x for x in (little, _cpu_line(f)) if x]
    wait = 1.0 - cpu_ms * 1000.0 / f.client.mean_us if cpu_ms and f.client else 0.5
    return Finding(
        "critical" if by_cpu or overflowing or not machine_contended(f) else "warning",
        "infrastructure",
        f"the service is saturated: {_kind(f, procs)}; too few workers for the load, "
        "requests queue", evidence,
        ["add workers (uvicorn --workers N, gunicorn -w N, MLServer parallel_workers), up to "
         "one per core", "or lower the load; find the capacity: harness capacity",
         "make each request cheaper: where the CPU goes, below"],
        min(1.0, max(0.0, wait)), {"busy": max(b.share for b in hot), "by": "cpu" if by_cpu
                                   else "loop", "processes": [b.process.pid for b in hot]})


def _blocker_line(frame: str, n: int, ticks: int) -> str:
    file = frame[frame.rfind(" (") + 2:-1].rsplit(":", 1)[0] if frame.endswith(")") else None
    where = ("the service's own code: a synchronous call it makes (time.sleep, a blocking "
             "client, file I/O) has no Python frame below it" if is_own_code(file)
             else "a library called synchronously on the loop")
    return f"{frame}: {n} samples, {fmt_pct(n / ticks)} of the loop's time ({where})"


@rule("single", "event_loop_blocked", layer="infrastructure", uses=("profile_wall",))
def event_loop_blocked(f: Facts) -> Finding | None:
    """An async service's event loop sits off-CPU inside callbacks: synchronous calls
    block it, and every request queues behind them (wall profile against on-CPU)."""
    loops = [lf for lf in (f.profile.loops if f.profile else ())
             if lf.view == "wall" and lf.ticks >= LOOP_MIN_SAMPLES]
    worst = max(loops, key=lambda lf: lf.blocked_share or 0.0, default=None)
    share = worst.blocked_share if worst is not None else None
    if worst is None or share is None or share < LOOP_BLOCKED_WARNING:
        return None
    evidence = [f"pid {lf.pid}: the loop thread blocked {fmt_pct(lf.blocked_share or 0.0)}, "
                f"running {fmt_pct(lf.busy_share)}, idle {fmt_pct(lf.idle_share)} of "
                f"{lf.ticks} wall samples" for lf in loops]
    evidence += [_blocker_line(frame, n, worst.ticks) for frame, n in worst.blockers]
    evidence.append("blocked = samples of a callback frame in the wall view that the on-CPU "
                    "view (same rate, same window) does not see running: the thread sleeps "
                    "in a synchronous call; awaited I/O leaves no such frame")
    return Finding(
        "critical" if share >= LOOP_BLOCKED_CRITICAL else "warning", "infrastructure",
        f"the event loop is blocked {fmt_pct(share)} of the time by synchronous calls: every "
        "request queues behind them", evidence,
        ["await an async client instead (redis.asyncio, httpx.AsyncClient, aiosqlite), or "
         "move the call off the loop: await asyncio.to_thread(...) / run_in_executor",
         "or declare the endpoint with def (FastAPI runs it in a thread pool)"],
        share, {"blocked": share, "frames": [fr for fr, _ in worst.blockers],
                "pid": worst.pid})
