"""Are py-spy's on-CPU samples CPU time? And what did py-spy cost the service?

**The check.** ``n`` on-CPU samples of a process at ``rate_hz`` claim ``n / rate_hz``
seconds of its threads running. The kernel says what they did over the same span: CPU
time (psutil: user + system, all threads) and time runnable but waiting for a CPU (the
run-queue delay, ``/proc/PID/task/TID/schedstat`` field 2, summed over the threads alive
at the end). py-spy's on-CPU test is the thread's state, running *or runnable*, so the
samples should come to CPU + run-queue; more than that counts threads that were neither
(waiting for I/O, a lock, a queue) as running. Measured (py-spy 0.4.3, 2 shared cores):
a fully idle process with 7 blocked threads and an asyncio loop gave 38 on-CPU samples in
5 s at 20 Hz in py-spy's default (blocking) mode and 0 with ``--nonblocking``; one thread
burning at 50 % duty next to 5 idle ones, 50 Hz, 6 s, ``--nonblocking``: 3.62 s sampled,
1.84 s CPU + 2.13 s run-queue (load average 8).

In py-spy's blocking mode the run-queue is partly py-spy's doing: stopping a process at a
sample wakes every one of its threads, which then queue for a CPU and are sampled as
runnable. On the idle process above (5 s, 20 Hz) blocking py-spy caused 0.03 CPU-s and
0.067 s of run-queue wait where ``--nonblocking`` and no py-spy caused none; on MLServer
(1 inference worker, ~17 threads in the main process) 78 % of the blocking on-CPU samples
had a blocking call as their leaf, 28-41 % with ``--nonblocking``. The check reports that
share (``wait_leaf_share``, by the stage map's wait rules) beside the seconds.

Verdicts (:func:`oncpu_check`), over the sampled processes measured from just before their
py-spy started to just after it exited (every sample inside that span):
``ok`` when the samples are at most :data:`OVERCOUNT` times the CPU (or exceed it by less
than :data:`MIN_EXCESS_CORE` of a core over the span, or by no more than chance:
:data:`POISSON_Z` standard deviations of a Poisson count); ``runnable_counted`` when they
exceed the CPU but not CPU + run-queue that way: the profile counts time runnable but
waiting for a CPU (a busy machine; in blocking mode also py-spy's own wake-ups), so its
seconds are not CPU seconds; ``idle_counted`` when they exceed CPU + run-queue: waiting
threads counted as running; ``over_cpu`` when they exceed the CPU and there is no
run-queue figure; ``unknown`` when no process was measured over its whole span.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.run.collectors.proctree import cpu_seconds

__all__ = ["MIN_EXCESS_CORE", "OVERCOUNT", "POISSON_Z", "Clock", "cost", "oncpu_check",
           "read_clock", "schedstat"]

#: samples above this multiple of what the kernel measured are not explained by it
OVERCOUNT = 1.5
#: ... and only an excess of at least this share of one core over the span counts (a
#: process idle but for a few samples has a ratio of infinity and means nothing)
MIN_EXCESS_CORE = 0.05
#: ... and the excess must be more than chance: this many standard deviations of the
#: number of samples py-spy's random intervals put in the measured seconds (a row of 24
#: expected samples needs more than 43; CI once saw ~40 on a busy machine)
POISSON_Z = 4.0


def schedstat(pid: int) -> tuple[float, float] | None:
    """(run s, run-queue wait s) summed over the process's threads alive now; None when the
    process is gone or the kernel has no schedstat (not Linux, CONFIG_SCHED_INFO off)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    run = wait = 0
    seen = False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                fields = f.read().split()
            run, wait, seen = run + int(fields[0]), wait + int(fields[1]), True
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listdir and open
    return (run / 1e9, wait / 1e9) if seen else None


@dataclass(frozen=True)
class Clock:
    """A process's CPU and run-queue seconds at one moment (epoch s)."""

    t: float
    cpu_s: float | None
    runq_s: float | None
    run_s: float | None = None


def read_clock(pid: int) -> Clock:
    stat = schedstat(pid)
    return Clock(time.time(), cpu_seconds(pid), None if stat is None else stat[1],
                 None if stat is None else stat[0])


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(0.0, b - a)


def _verdict(sampled_s: float, cpu_s: float, runq_s: float | None, span_s: float,
             rate_hz: int) -> str:
    floor = MIN_EXCESS_CORE * span_s

    def over(measured: float) -> bool:
        # py-spy's intervals are exponential, so the samples that land in ``measured``
        # seconds are Poisson with mean rate x measured: more than POISSON_Z standard
        # deviations above it is not chance
        expected = rate_hz * measured
        chance = POISSON_Z * math.sqrt(expected) / rate_hz
        return (sampled_s > OVERCOUNT * measured and sampled_s - measured >= floor
                and sampled_s > measured + chance)

    if not over(cpu_s):
        return "ok"
    if runq_s is None:
        return "over_cpu"
    return "idle_counted" if over(cpu_s + runq_s) else "runnable_counted"


def _row_check(samples: int, rate_hz: int, start: Clock, end: Clock) -> dict[str, Any] | None:
    span = end.t - start.t
    cpu = _delta(start.cpu_s, end.cpu_s)
    if cpu is None or span <= 0:
        return None
    runq = _delta(start.runq_s, end.runq_s)
    sampled = samples / rate_hz
    return {"span_s": round(span, 3), "samples": samples, "sampled_s": round(sampled, 3),
            "cpu_s": round(cpu, 3), "runq_s": None if runq is None else round(runq, 3),
            "sampled_core_pct": round(100 * sampled / span, 1),
            "cpu_core_pct": round(100 * cpu / span, 1),
            "verdict": _verdict(sampled, cpu, runq, span, rate_hz)}


def oncpu_check(per_process: Sequence[tuple[int, int, Clock | None, Clock | None]],
                rate_hz: int, blocking: bool = False,
                wait_leaf_share: float | None = None) -> dict[str, Any]:
    """The check over (pid, on-CPU samples, clock at attach, clock at the end) per sampled
    process: ``{"verdict", "sampled_s", "cpu_s", "runq_s", "ratio", "blocking",
    "wait_leaf_share", "detail", "processes": {pid: row}}``; processes without both clocks
    (ended early) are left out. ``wait_leaf_share``: the share of the on-CPU samples whose
    leaf is a blocking call (evidence, not part of the verdict)."""
    rows = {}
    for pid, samples, start, end in per_process:
        row = None if start is None or end is None \
            else _row_check(samples, rate_hz, start, end)
        if row is not None:
            rows[str(pid)] = row
    if not rows:
        return {"verdict": "unknown", "processes": {}, "blocking": blocking,
                "wait_leaf_share": wait_leaf_share,
                "detail": "no sampled process was measured from before its py-spy started "
                          "to after it exited"}
    sampled = sum(r["sampled_s"] for r in rows.values())
    cpu = sum(r["cpu_s"] for r in rows.values())
    runqs = [r["runq_s"] for r in rows.values()]
    runq = None if None in runqs else sum(runqs)
    span = max(r["span_s"] for r in rows.values())
    verdicts = [r["verdict"] for r in rows.values()]
    verdict = next((v for v in ("idle_counted", "over_cpu", "runnable_counted")
                    if v in verdicts), _verdict(sampled, cpu, runq, span, rate_hz))
    out = {"verdict": verdict, "sampled_s": round(sampled, 3), "cpu_s": round(cpu, 3),
           "runq_s": None if runq is None else round(runq, 3),
           "ratio": round(sampled / cpu, 2) if cpu > 0 else None, "blocking": blocking,
           "wait_leaf_share": wait_leaf_share, "processes": rows}
    out["detail"] = _detail(out, rows)
    return out


def _detail(check: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str:
    worst_pid, worst = max(rows.items(), key=lambda kv: kv[1]["sampled_s"] - kv[1]["cpu_s"])
    text = (f"on-CPU samples {check['sampled_s']:.2f} s vs CPU {check['cpu_s']:.2f} s"
            + (f" + run-queue {check['runq_s']:.2f} s" if check["runq_s"] is not None else "")
            + f" (pid {worst_pid}: {worst['sampled_core_pct']:.0f} % of a core sampled, "
              f"{worst['cpu_core_pct']:.0f} % used")
    share = check.get("wait_leaf_share")
    text += ")" if share is None else f"; {100 * share:.0f} % of the samples at a waiting call)"
    verdict, blocking = check["verdict"], check["blocking"]
    if verdict == "idle_counted":
        text += ": py-spy counted waiting threads as running; the on-CPU shares are not CPU"
    elif verdict == "over_cpu":
        text += ": more than the CPU measured (no run-queue figure to say why)"
    elif verdict == "runnable_counted" and blocking:
        text += (": the samples count runnable threads, and py-spy's blocking mode makes "
                 "the threads it stops runnable: the on-CPU shares are not CPU "
                 "(--nonblocking, the default, does not)")
    elif verdict == "runnable_counted":
        text += ": the samples include time runnable but waiting for a CPU (a busy machine)"
    if blocking and verdict in ("idle_counted", "over_cpu"):
        text += " (py-spy ran in blocking mode; --nonblocking is the default)"
    return text


def cost(*, pyspy_cpu_s: float | None, service_cpu_s: float | None, span_s: float,
         paused: Mapping[str, tuple[float, float]], blocking: bool) -> dict[str, Any]:
    """What py-spy cost: its CPU as a share of one core and of the sampled processes' CPU,
    and in blocking mode how long it held each process stopped at most: ``paused`` maps a
    pid to (py-spy's run + run-queue s, the span it sampled)."""
    out: dict[str, Any] = {"pyspy_cpu_s": pyspy_cpu_s, "blocking": blocking,
                           "pyspy_core_pct": None, "service_cpu_share": None,
                           "paused_share": None, "paused_share_by_pid": {}}
    if pyspy_cpu_s is not None and span_s > 0:
        out["pyspy_core_pct"] = round(100 * pyspy_cpu_s / span_s, 1)
    if pyspy_cpu_s is not None and service_cpu_s:
        out["service_cpu_share"] = round(pyspy_cpu_s / service_cpu_s, 3)
    by_pid = {pid: round(busy / span, 3) for pid, (busy, span) in paused.items() if span > 0}
    if blocking and by_pid:
        out["paused_share_by_pid"] = by_pid
        out["paused_share"] = max(by_pid.values())
    return out
