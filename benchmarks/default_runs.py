"""Do runs with default options end `complete` when their numbers are right? (issue 19)

Runs ``harness run SCENARIO --serve reference --rate R`` with no other option N times per
scenario while ``--burners`` processes keep cores busy (one busy loop each, as another
user's job would), and tallies each run's status and failed self-checks. Then, with
``--starve``, two controls: (1) the same run with the harness under ``nice -n 19`` while two
busy loops per core run at normal priority (CFS still wakes a mostly sleeping process
promptly, so this may not starve it: the run is then rightly complete); (2) the load
generator's process paused for 0.2 s of every second (SIGSTOP/SIGCONT from outside, no CPU
at all meanwhile): its own loop starts the requests due in the pauses late, and the run
must be flagged (not ``complete``).

    .venv/bin/python benchmarks/default_runs.py --runs 10 --burners 1
    .venv/bin/python benchmarks/default_runs.py --runs 0 --starve

Prints a markdown table (for BENCHMARKS.md) and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BURN = "import os\nwhile True:\n    pass\n"


def _burners(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([PY, "-c", BURN]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _pause_driver(harness: subprocess.Popen[str], stop: threading.Event) -> None:
    """SIGSTOP the load driver (harness.load.driver, a child of the harness) for 0.2 s of
    every second until ``stop``."""
    import psutil

    while not stop.is_set():
        try:
            drivers = [p for p in psutil.Process(harness.pid).children(recursive=True)
                       if "harness.load.driver" in " ".join(p.cmdline())]
        except psutil.Error:
            drivers = []
        for p in drivers:
            with contextlib.suppress(psutil.Error):
                p.suspend()
        time.sleep(0.2)
        for p in drivers:
            with contextlib.suppress(psutil.Error):
                p.resume()
        stop.wait(0.8)


def _run(scenario: str, rate: float, out: Path, nice: int = 0,
         pause: bool = False) -> dict[str, object]:
    cmd = [PY, "-m", "harness.cli", "run", scenario, "--serve", "reference", "--rate",
           f"{rate:g}", "--out", str(out)]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    stop = threading.Event()
    pauser = threading.Thread(target=_pause_driver, args=(proc, stop), daemon=True)
    if pause:
        pauser.start()
    try:
        stdout, stderr = proc.communicate()
    finally:
        stop.set()
        if pause:
            pauser.join()
    res = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    run_dir = next((ln.split(": ", 1)[1].split("  (")[0] for ln in res.stdout.splitlines()
                    if ln.startswith("run directory: ")), None)
    failed: list[str] = []
    if run_dir:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        failed = [f"{c['check']}({c['severity']})" for c in summary["self_check"]
                  if not c["ok"] and c["severity"] in ("error", "warning")]
    return {"scenario": Path(scenario).stem, "exit": res.returncode,
            "status": {0: "complete", 3: "degraded", 130: "incomplete"}.get(res.returncode,
                                                                             "failed"),
            "failed": failed, "seconds": round(time.monotonic() - began, 1),
            "run_dir": run_dir}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    p.add_argument("--rate", type=float, default=40.0)
    p.add_argument("--burners", type=int, default=1, help="busy loops beside the runs")
    p.add_argument("--scenarios", default="scenarios/production.py,scenarios/ood.py")
    p.add_argument("--starve", action="store_true",
                   help="also the control: the harness under nice 19 beside 2 loops per core")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--controls-only", action="store_true", help="only the --starve controls")
    a = p.parse_args()
    if a.controls_only:
        a.runs, a.starve = 0, True
    out = a.out or Path(tempfile.mkdtemp(prefix="default-runs-"))
    results = []
    burners = _burners(a.burners)
    try:
        for i in range(a.runs):
            for scenario in a.scenarios.split(","):
                r = _run(scenario, a.rate, out)
                results.append(r)
                print(f"{i + 1:>2} {r['scenario']:<12} {r['status']:<10} {r['seconds']:>6} s  "
                      f"{' '.join(r['failed']) or '-'}", flush=True)
    finally:
        _stop(burners)
    print("\n| scenario | runs | complete | degraded | other | failed checks (warnings too) |")
    print("|---|---|---|---|---|---|")
    for scenario in a.scenarios.split(","):
        rows = [r for r in results if r["scenario"] == Path(scenario).stem]
        statuses = Counter(str(r["status"]) for r in rows)
        checks = Counter(c for r in rows for c in r["failed"])  # type: ignore[attr-defined]
        print(f"| {Path(scenario).stem} | {len(rows)} | {statuses['complete']} | "
              f"{statuses['degraded']} | {len(rows) - statuses['complete'] - statuses['degraded']}"
              f" | {', '.join(f'{k} x{v}' for k, v in checks.most_common()) or '-'} |")
    if a.starve:
        starving = _burners(2 * (os.cpu_count() or 2))
        try:
            r = _run(a.scenarios.split(",")[0], a.rate, out, nice=19)
        finally:
            _stop(starving)
        print(f"\nstarved load generator (nice 19 beside {2 * (os.cpu_count() or 2)} busy "
              f"loops): status {r['status']}, exit {r['exit']}, failed: "
              f"{' '.join(r['failed']) or '-'}")  # type: ignore[arg-type]
        r = _run(a.scenarios.split(",")[0], a.rate, out, pause=True)
        print(f"paused load generator (SIGSTOP 0.2 s of every second): status {r['status']}, "
              f"exit {r['exit']}, failed: {' '.join(r['failed']) or '-'}")  # type: ignore[arg-type]
    print(f"\nrun directories under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
