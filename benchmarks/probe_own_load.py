"""Does the machine-speed probe move with the runs' own load, or with the host?

The comparison of runs (``harness compare``) leaves a round out when the machine-speed probe
(harness/run/collectors/cpuprobe.py) moved by more than 10 % between its A and B runs. If
a B that loads the cores more (a heavier model version) slowed the probe by itself, a real
regression would be reported "not comparable" instead of "slower". This measures it: the
probe, pinned to CPU 0, in four conditions interleaved in rounds (so the host's own drift
hits all of them alike):

- ``idle``: nothing else of ours running;
- ``other``: a busy loop pinned to CPU 1 (the other core is full);
- ``same``: a busy loop pinned to CPU 0 (the probe's core is shared);
- ``both``: busy loops on both cores (the machine is full, as under a CPU-heavy B).

For each condition: the median over rounds of the probe's mean (what the gate reads), the
share of probes on the fast mode (< ``FAST_US``), and the median of each round's fastest
probe. If own load moved the probe, ``other``/``same``/``both`` would read slower than
``idle`` in every round; measured on the 2-core VM (BENCHMARKS.md) they do not.

    .venv/bin/python benchmarks/probe_own_load.py --rounds 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.run.collectors.cpuprobe import probe_us  # noqa: E402

CONDITIONS = ("idle", "other", "same", "both")
#: the probe's two modes on the VM: ~100-115 µs and ~150-185 µs (the host's busy sibling)
FAST_US = 140.0
LOOP = "while True: pass"


def _burner(cpu: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", LOOP])


def measure(condition: str, probes: int) -> tuple[float, float, float]:
    """(mean, share on the fast mode, fastest) of ``probes`` probes under ``condition``."""
    burners = []
    if condition in ("other", "both"):
        burners.append(_burner(1))
    if condition in ("same", "both"):
        burners.append(_burner(0))
    try:
        time.sleep(0.2)  # the burners are running
        values = []
        for _ in range(probes):
            values.append(probe_us())
            time.sleep(0.01)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    return (statistics.fmean(values), sum(v < FAST_US for v in values) / len(values),
            min(values))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--probes", type=int, default=20, help="probes per condition and round")
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPUs", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {0})
    got: dict[str, list[tuple[float, float, float]]] = {c: [] for c in CONDITIONS}
    for r in range(args.rounds):
        order = CONDITIONS[r % 4:] + CONDITIONS[:r % 4]  # rotate: no condition always first
        for c in order:
            got[c].append(measure(c, args.probes))
    print(f"{args.rounds} rounds x {args.probes} probes, conditions rotated each round")
    print(f"{'condition':<10} {'mean µs (median)':>17} {'fast share':>11} "
          f"{'fastest µs':>11}  per-round means")
    for c in CONDITIONS:
        rows = got[c]
        print(f"{c:<10} {statistics.median(x[0] for x in rows):>17.1f} "
              f"{statistics.fmean(x[1] for x in rows):>11.2f} "
              f"{statistics.median(x[2] for x in rows):>11.1f}  "
              + " ".join(f"{x[0]:.0f}" for x in rows))
    idle = [x[0] for x in got["idle"]]
    for c in CONDITIONS[1:]:
        ratios = [x[0] / i for x, i in zip(got[c], idle, strict=True)]
        slower = sum(q > 1.10 for q in ratios)
        print(f"{c} / idle, same round: median {statistics.median(ratios):.2f}, "
              f"> 1.10 in {slower}/{len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
