"""Whether the machine itself changed between two runs: the load generator's start lateness.

In the open model the load driver records how late each request started against its
schedule (the ``lateness`` series): a probe of the machine that does not depend on the
service, since the load generator only waits for a CPU. Measured on the 2-core VM
(BENCHMARKS.md, "Comparison across runs"): between back-to-back A/A runs the p90 of that
lateness (+ 0.5 ms, so a quiet machine's ~1 ms does not count as a change) moved by less
than 2.5x in 95 % of pairs, while in the pairs where another process starved the machine
it moved 40-150x and every request name's client p50 moved 4-26x with it: such a pair
measures the machine, not A and B. ``MACHINE_SHIFT_LIMIT`` (4x) lies between the two.
"""

from __future__ import annotations

import math

from harness.rundir import RunDir
from harness.stats import percentiles

__all__ = ["LATENESS_FLOOR_US", "MACHINE_SHIFT_LIMIT", "SPEED_SHIFT_LIMIT", "cpu_probe_us",
           "disturbed", "lateness_p90_us", "machine_shift", "speed_shift"]

MACHINE_SHIFT_LIMIT = 4.0
#: the machine-speed probe (harness.run.collectors.cpuprobe) of two runs differing by more
#: than this: the pair measures the machine's speed (set from the calibration: BENCHMARKS.md)
SPEED_SHIFT_LIMIT = 0.10
LATENESS_FLOOR_US = 500


def lateness_p90_us(run: RunDir) -> int | None:
    """p90 of the load generator's start lateness in the measured window (µs); None in the
    closed model (no schedule, no lateness) or without samples."""
    hist = run.histogram("lateness", "*")
    if hist.get_total_count() < 10:
        return None
    return int(percentiles(hist, [90])[90])


def machine_shift(a: RunDir, b: RunDir) -> float | None:
    """(lateness p90 of B + floor) / (that of A + floor); None when either has none."""
    la, lb = lateness_p90_us(a), lateness_p90_us(b)
    if la is None or lb is None:
        return None
    return (lb + LATENESS_FLOOR_US) / (la + LATENESS_FLOOR_US)


def disturbed(a: RunDir, b: RunDir, speed_gate: bool = True) -> str | None:
    """Why the pair measures the machine rather than A and B, or None: the load generator's
    lateness moved (the machine starved), or the machine's CPU speed moved (the probe;
    ``speed_gate=False`` when a control request name cancels the speed already)."""
    pa, pb = cpu_probe_us(a), cpu_probe_us(b)  # each run's summary.json read once
    speed = _speed_ratio(pa, pb)
    if speed_gate and speed is not None \
            and abs(math.log(speed)) > math.log(1.0 + SPEED_SHIFT_LIMIT):
        return (f"the machine's speed changed between {a.path.name} and {b.path.name}: a "
                f"fixed unit of work took {pa:.0f} µs and {pb:.0f} "
                f"µs of CPU (mean of the run's probes; {100 * (speed - 1):+.0f} %, limit "
                f"±{100 * SPEED_SHIFT_LIMIT:.0f} %): every CPU-bound stage moves with it")
    shift = machine_shift(a, b)
    if shift is None or abs(math.log(shift)) <= math.log(MACHINE_SHIFT_LIMIT):
        return None
    la, lb = lateness_p90_us(a) or 0, lateness_p90_us(b) or 0
    return (f"the machine changed between {a.path.name} and {b.path.name}: the load "
            f"generator started its requests late by {la / 1000:.1f} ms and "
            f"{lb / 1000:.1f} ms (p90), a {max(shift, 1 / shift):.0f}x change (limit "
            f"{MACHINE_SHIFT_LIMIT:g}x)")


def cpu_probe_us(run: RunDir) -> float | None:
    """The mean CPU time (µs) of the machine-speed probe's unit of work over the run's window
    (summary.json resources.cpu_probe); None for runs made before the probe existed."""
    doc = run.read_json("summary.json") or {}
    probe = (doc.get("resources") or {}).get("cpu_probe") or {}
    value = probe.get("mean_us") if isinstance(probe, dict) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def speed_shift(a: RunDir, b: RunDir) -> float | None:
    """B's probe over A's: above 1 the machine was slower in B; None when either has none."""
    return _speed_ratio(cpu_probe_us(a), cpu_probe_us(b))


def _speed_ratio(pa: float | None, pb: float | None) -> float | None:
    return pb / pa if pa and pb else None
