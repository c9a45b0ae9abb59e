"""Distributed load: requests/s with 0 (one process), 1, 2 and 4 Locust workers against one
target, with the load generators' CPU, side by side in rounds.

    .venv/bin/python benchmarks/distributed_scaling.py --duration 10 --rounds 2

The target is the reference service's ``GET /healthz`` (gunicorn, ``--service-workers``
sync workers), loaded with ``benchmarks/locustfiles/health_fasthttp.py`` (FastHttpUser,
no wait) by ``harness run --users U --workers N --no-profile`` (closed model: as fast as
it goes). The settings run in rounds (0 1 2 4 0 1 2 4 ...) so that machine noise hits
all alike; each row is the median over rounds of:

- requests/s: the run's measured requests over its measured seconds (load.json);
- load generator CPU: the harness's whole process tree (its main process, the driver,
  the workers, psutil sampling) from ``getrusage(RUSAGE_CHILDREN)`` around the run, as
  cores busy over the run's wall time, and requests per load-generator CPU-second;
- service CPU: the reference service's process tree over the same wall time (psutil).

On a machine whose cores are shared by the service and the load generators, workers add
capacity only while cores are free: the table says where that ends on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.run.target import ServeOptions, serve_reference  # noqa: E402

LOCUSTFILE = ROOT / "benchmarks" / "locustfiles" / "health_fasthttp.py"


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _tree_cpu(pid: int) -> float:
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def run_once(url: str, service_pid: int, workers: int, users: int, duration: int,
             out: Path) -> dict:
    cpu0, svc0, t0 = _children_cpu(), _tree_cpu(service_pid), time.monotonic()
    args = [sys.executable, "-m", "harness.cli", "run", str(LOCUSTFILE), "--target", url,
            "--users", str(users), "--duration", f"{duration}s", "--warmup", "2s",
            "--workers", str(workers), "--no-profile", "--out", str(out), "--json"]
    res = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    cpu, svc = _children_cpu() - cpu0, _tree_cpu(service_pid) - svc0
    if res.returncode not in (0, 3):
        raise RuntimeError(f"harness run failed ({res.returncode}): {res.stderr[-2000:]}")
    run_dir = sorted(out.iterdir(), key=lambda p: p.stat().st_mtime)[-1]
    load = json.loads((run_dir / "load.json").read_text())
    meta = json.loads((run_dir / "run.json").read_text())
    measured = load["measured"]
    requests = measured["requests"] + measured["failures"]
    return {"workers": workers, "rps": requests / duration, "requests": requests,
            "wall_s": wall, "loadgen_cpu_s": cpu, "loadgen_cores": cpu / wall,
            "service_cores": svc / wall, "per_cpu_s": requests / cpu if cpu else None,
            "status": meta["status"], "dir": str(run_dir)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--workers", default="0,1,2,4")
    ap.add_argument("--service-workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write every run's row here")
    args = ap.parse_args()
    settings = [int(x) for x in args.workers.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        target = serve_reference(ServeOptions(workers=args.service_workers),
                                 Path(tmp) / "service.log")
        try:
            for r in range(args.rounds):
                for n in settings:
                    row = run_once(target.url, target.process.pid, n, args.users,
                                   args.duration, Path(tmp) / "runs")
                    row["round"] = r + 1
                    rows.append(row)
                    print(f"round {r + 1} workers {n}: {row['rps']:.0f} req/s, load generator "
                          f"{row['loadgen_cores']:.2f} cores, service "
                          f"{row['service_cores']:.2f} cores ({row['status']})", flush=True)
        finally:
            target.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{os.cpu_count()} cores; {args.users} users, {args.duration} s measured, "
          f"{args.rounds} rounds; medians")
    print(f"{'workers':>8} {'req/s':>8} {'loadgen cores':>14} {'req per loadgen CPU-s':>22} "
          f"{'service cores':>14}  statuses")
    for n in settings:
        mine = [row for row in rows if row["workers"] == n]
        med = {k: statistics.median(row[k] for row in mine)
               for k in ("rps", "loadgen_cores", "per_cpu_s", "service_cores")}
        label = "0 (one process)" if n == 0 else str(n)
        print(f"{label:>8} {med['rps']:8.0f} {med['loadgen_cores']:14.2f} "
              f"{med['per_cpu_s']:22.0f} {med['service_cores']:14.2f}  "
              f"{','.join(row['status'] for row in mine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
