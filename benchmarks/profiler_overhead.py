"""What py-spy costs the service: throughput with and without the profile collector attached.

A gunicorn service (2 sync workers by default) serving a small CPU-bound WSGI
app is driven at saturation by wrk (closed loop, 2 connections per worker).
Each configuration is measured in pairs: an unprofiled run right next to a
profiled one (order alternating by round), and the cost is the median over
rounds of 1 - profiled/unprofiled. Pairing matters on a shared machine, where
absolute throughput moves by tens of percent from minute to minute. py-spy is
attached through the real ProfileCollector, exactly as a run attaches it.
Printed, per configuration, medians over the pairs of: the service's CPU per
request (what the workers pay: ptrace stops, cache refills), the same plus
py-spy's own CPU (the capacity cost on a machine whose cores are all busy),
py-spy's CPU, the throughput cost (noisy on a shared machine: its paired
min..max is shown), and what py-spy reported (samples, errors, lag warnings).

    .venv/bin/python benchmarks/profiler_overhead.py --duration 5 --rounds 3

Needs wrk on PATH. On a shared machine, compare costs within one table only.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.run.collectors.base import CollectorContext  # noqa: E402
from harness.run.collectors.profile import ProfileCollector  # noqa: E402

APP = textwrap.dedent('''
    import json

    def features(n):
        return [((i * 7919) % 1000) / 1000.0 for i in range(n)]

    def score(xs):
        acc = 0.0
        for i, x in enumerate(xs):
            acc += (x * x + i) % 3.0
        return acc

    def application(environ, start_response):
        xs = features(4000)
        body = json.dumps({"score": score(xs), "n": len(xs)}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
''')

# py-spy runs --nonblocking by default; "blocking" rows ask for its own default mode (the
# tables in docs/collectors.md before "Blocking or not" were made when blocking was ours).
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("oncpu 100 Hz blocking", {"rate_hz": 100, "nonblocking": False}),
    ("oncpu 50 Hz blocking", {"rate_hz": 50, "nonblocking": False}),
    ("oncpu 20 Hz blocking", {"rate_hz": 20, "nonblocking": False}),
    ("oncpu 20 Hz (default, nonblocking)", {"rate_hz": 20}),
    ("oncpu 100 Hz nonblocking", {"rate_hz": 100, "nonblocking": True}),
    ("wall 100 Hz blocking", {"rate_hz": 100, "views": ["wall"], "nonblocking": False}),
    ("oncpu+wall 100 Hz (nonblocking)", {"rate_hz": 100, "views": ["oncpu", "wall"]}),
    ("oncpu+wall 50 Hz (nonblocking)", {"rate_hz": 50, "views": ["oncpu", "wall"]}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"service at {url} did not answer within {timeout_s} s")


def run_wrk(url: str, duration_s: int, connections: int) -> tuple[float, int]:
    """(requests/s, requests) of one saturating wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", url],
                         capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"wrk printed no request counts: {out!r}")
    return float(rate.group(1)), int(total.group(1))


def tree_cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def one(url: str, master_pid: int, options: dict[str, Any] | None, duration_s: int,
        connections: int, workdir: Path) -> dict[str, Any]:
    """One saturating run; CPU is counted per request, which other load on the machine
    does not change (it changes how much CPU the service gets, not what a request needs)."""
    master = psutil.Process(master_pid)
    service = [master, *master.children()]
    collector = None
    spies: list[psutil.Process] = []
    if options is not None:
        run_dir = Path(tempfile.mkdtemp(dir=workdir))
        collector = ProfileCollector.from_options(options)
        now = time.time()
        collector.start(CollectorContext(run_dir, master_pid, None, now, now + 600, {}))
        time.sleep(0.5)  # py-spy attaches before the load starts
        spies = [psutil.Process(pid) for pid in collector.pids()]
    svc0, spy0 = tree_cpu_s(service), tree_cpu_s(spies)
    rps, requests = run_wrk(url, duration_s, connections)
    svc1, spy1 = tree_cpu_s(service), tree_cpu_s(spies)
    out: dict[str, Any] = {"rps": rps, "svc_cpu_ms": 1000.0 * (svc1 - svc0) / requests,
                           "spy_cpu_ms": 1000.0 * (spy1 - spy0) / requests,
                           "pyspy_cpu": 100.0 * (spy1 - spy0) / duration_s}
    if collector is not None:
        status = collector.stop()
        out.update(samples=status.get("samples", 0), errors=status.get("errors", 0),
                   lag=status.get("lag_warnings", 0), ok=status.get("ok"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", action="append", metavar="LABEL",
                        help="run only this configuration (repeatable), e.g. 'oncpu 20 Hz'")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not on PATH", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="profiler-overhead-"))
    (workdir / "bench_app.py").write_text(APP)
    port = free_port()
    service = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-w", str(args.workers), "-b",
         f"127.0.0.1:{port}", "--chdir", str(workdir), "bench_app:application"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    configs = [(label, o) for label, o in CONFIGS if not args.only or label in args.only]
    if not configs:
        parser.error(f"--only must name configurations from {[c for c, _ in CONFIGS]} "
                     f"(got {args.only})")
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in configs}
    base_rps: list[float] = []
    conns = 2 * args.workers
    try:
        wait_ready(url)
        run_wrk(url, 2, conns)  # warm-up
        for rnd in range(args.rounds):
            for label, options in configs:
                pair = []
                for profiled in ((False, True) if rnd % 2 == 0 else (True, False)):
                    opts = options if profiled else None
                    pair.append(one(url, service.pid, opts, args.duration, conns, workdir))
                base, prof = (pair[0], pair[1]) if rnd % 2 == 0 else (pair[1], pair[0])
                prof["cost"] = 100.0 * (1.0 - prof["rps"] / base["rps"])
                prof["svc_cost"] = 100.0 * (prof["svc_cpu_ms"] / base["svc_cpu_ms"] - 1.0)
                prof["cpu_cost"] = 100.0 * ((prof["svc_cpu_ms"] + prof["spy_cpu_ms"])
                                            / base["svc_cpu_ms"] - 1.0)
                prof["base_cpu_ms"] = base["svc_cpu_ms"]
                base_rps.append(base["rps"])
                results[label].append(prof)
                print(f"round {rnd + 1} {label}: {base['rps']:.0f} -> {prof['rps']:.0f} req/s, "
                      f"service CPU/request {prof['svc_cost']:+.1f} %", file=sys.stderr)
    finally:
        service.terminate()
        service.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join(["python", "benchmarks/profiler_overhead.py", *sys.argv[1:]])
    print(f"`{command}` ({args.workers} gunicorn sync workers, wrk -c{conns}, {args.duration} s "
          f"runs, {args.rounds} pairs per row, {psutil.cpu_count()} CPUs; unprofiled median "
          f"{statistics.median(base_rps):.0f} req/s, range {min(base_rps):.0f}-"
          f"{max(base_rps):.0f})\n")
    base_ms = statistics.median(r["base_cpu_ms"] for runs in results.values() for r in runs)
    print(f"Service CPU per request without py-spy: {base_ms:.2f} ms (median).\n")
    print("| configuration | service CPU/request | + py-spy's CPU | py-spy CPU % of a core "
          "| throughput (noisy) | throughput paired min..max | samples | errors | lag warnings |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("svc_cost", "cpu_cost", "pyspy_cpu", "cost", "samples", "errors")}
        costs = [r["cost"] for r in runs]
        print(f"| {label} | {med['svc_cost']:+.1f} % | {med['cpu_cost']:+.1f} % "
              f"| {med['pyspy_cpu']:.0f} | {med['cost']:+.1f} % "
              f"| {min(costs):+.0f}..{max(costs):+.0f} % | {med['samples']:.0f} "
              f"| {med['errors']:.0f} | {sum(r['lag'] for r in runs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
