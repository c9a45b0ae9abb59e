"""The machine's CPU speed, probed: the CPU time a fixed unit of work takes, during the run.

Why: on a shared machine (a VM whose cores are hyperthreads of a host's, neighbours on the
host) the same code runs at different speeds from one minute to the next. Measured on the
2-core VM (BENCHMARKS.md, "Comparison across runs"): in 3 of 10 rounds of back-to-back
runs every request name's inference p50 moved by 20-60 % between runs made a minute apart,
together, while nothing in the service changed; and a pure-Python unit of work took
~100-115 µs or ~150-185 µs of CPU depending on the host: whatever ran in the VM (busy loops
on either core or both: ``benchmarks/probe_own_load.py``) left it unchanged, so a run's own
load does not move it. A comparison of two runs needs to know whether the machine ran at the
same speed in both.

How: the resources sampler calls :func:`probe_us` at every tick (4 Hz). One probe runs
``REPEATS`` times a fixed pure-Python loop (integer arithmetic, ~100 µs) and keeps the
shortest *thread CPU time* (``time.thread_time_ns``): CPU time, so waiting for a core or
for the GIL does not count, and the shortest of five, so an interrupt or a cold cache after
a context switch does not either. What is left is how fast this machine's cores execute
instructions at that moment. Cost: ~0.5 ms of CPU per tick, 0.2 % of one core at 4 Hz.
"""

from __future__ import annotations

import time

__all__ = ["LOOP", "METHOD", "REPEATS", "probe_us"]

LOOP = 1500
REPEATS = 5
METHOD = (f"shortest thread CPU time of {REPEATS} runs of a {LOOP}-step pure-Python integer "
          "loop, at every resources tick")


def _work(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def probe_us(loop: int = LOOP, repeats: int = REPEATS) -> float:
    """The CPU time (µs) of one unit of work: the shortest of ``repeats`` runs."""
    best: int | None = None
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        _work(loop)
        took = time.thread_time_ns() - t0
        if best is None or took < best:
            best = took
    return (best or 0) / 1000.0
