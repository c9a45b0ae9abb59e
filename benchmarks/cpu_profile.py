"""CPU-time profile of one harness command (cProfile with a process-time clock).

    .venv/bin/python benchmarks/cpu_profile.py OUT.prof harness.cli run LOCUSTFILE --target URL ...
    .venv/bin/python -m pstats OUT.prof     # then: sort cumulative, stats 40

A wall-clock profile of ``harness run`` is dominated by the time it waits for its driver;
with ``time.process_time`` as the timer only CPU counts, which is what the load-generator
efficiency benchmark charges the harness for (BENCHMARKS.md).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    code = 0
    try:
        runpy.run_module(module, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        profiler.disable()
        profiler.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
