"""Where the load driver's CPU goes per request: py-spy on the driver, bare Locust beside it.

    .venv/bin/python benchmarks/loadgen_profile.py --duration 20 --rounds 2

One reference service (2 sync workers) is started once; bare Locust and the harness
(``--no-profile``: py-spy is here attached to the *load generator*) take turns on
``GET /healthz`` from FastHttpUser with 8 users and no think time. py-spy records the
load-generating process (bare Locust's process; the harness's driver) at 250 Hz,
``--nonblocking``, for the middle of the run; its own CPU is the benchmark's, not theirs.
Before each run the sockets the last one left in TIME_WAIT are drained, the order of the two
alternates by round, and the requests of the profiled span are the kernel's count of TCP
connections opened (one per request: the service closes each), as in loadgen_efficiency.py.

Printed, per contender, medians over rounds: requests/s, the process's CPU per request
(µs, from its /proc CPU times over the recorded span), and the on-CPU samples by where
their innermost frame is: the harness's own modules (by file), Locust, geventhttpclient,
gevent, hdrh, the rest. The harness's extra µs per request, split by module, is what the
efficiency target (BENCHMARKS.md) asks to find. Last, per function (inclusive: every
sample with the function anywhere on its stack), the µs per request under each, largest
difference first: the threadpool's hand-off of every ``getaddrinfo`` was found this way.
"""

from __future__ import annotations

import argparse
import collections
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

sys.path.insert(0, str(ROOT / "benchmarks"))
from loadgen_efficiency import _active_opens, drain_timewait  # noqa: E402

LOCUSTFILE = ROOT / "benchmarks" / "locustfiles" / "health_fasthttp.py"
PYSPY = ROOT / ".venv" / "bin" / "py-spy"


def _bucket(frame: str) -> str:
    """The owner of a collapsed-stack frame ``func (path:line)``."""
    path = "/" + frame.rsplit("(", 1)[-1]  # py-spy may print paths relative to sys.path
    if "/harness/" in path:
        return "harness/" + path.split("/harness/", 1)[1].split(":", 1)[0]
    for name in ("locust", "geventhttpclient", "gevent", "hdrh", "psutil", "zmq", "msgpack"):
        if f"/{name}/" in path:
            return name
    return "other (stdlib, C)"


def _profile(pid: int, seconds: float, out: Path
             ) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    subprocess.run([str(PYSPY), "record", "--pid", str(pid), "--rate", "250", "--duration",
                    str(int(seconds)), "--nonblocking", "--format", "raw", "--output", str(out)],
                   check=True, capture_output=True)
    self_time: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()  # the innermost function
    inclusive: collections.Counter = collections.Counter()  # anywhere on the stack
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # from the innermost frame out, the first that belongs to a package of note: a
        # record_value (hdrh) or a dict lookup (C) called by the harness is the harness's
        owner = next((b for b in map(_bucket, reversed(frames))
                      if b not in ("other (stdlib, C)", "hdrh")), None)
        self_time[owner or _bucket(frames[-1])] += int(count)
        leaves[frames[-1].split(" (")[0] + " @ " + _bucket(frames[-1])] += int(count)
        for name in {f.split(" (")[0] for f in frames}:
            inclusive[name] += int(count)
    return self_time, leaves, inclusive


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _driver(harness: subprocess.Popen[str]) -> psutil.Process:
    deadline = time.time() + 60
    while time.time() < deadline:
        for child in psutil.Process(harness.pid).children(recursive=True):
            if "harness.load.driver" in " ".join(child.cmdline()):
                return child
        time.sleep(0.1)
    raise RuntimeError("no driver process")


def run_one(kind: str, url: str, duration: int, tmp: Path) -> dict:
    drain_timewait()
    if kind == "locust":
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "8",
             "-r", "8", "-t", f"{duration}s", "-H", url, "--only-summary", "--loglevel",
             "WARNING", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        target = psutil.Process(proc.pid)
    else:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(LOCUSTFILE), "--target", url,
             "--users", "8", "--duration", f"{duration}s", "--warmup", "0s", "--no-profile",
             "--out", str(tmp / "runs"), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        target = _driver(proc)
    time.sleep(4.0)  # past start-up (imports, the calibration's echo)
    span = duration - 7.0
    cpu0, t0, opens0 = _cpu(target), time.monotonic(), _active_opens()
    samples, leaves, inclusive = _profile(target.pid, span, tmp / f"{kind}.txt")
    cpu1, t1, opens1 = _cpu(target), time.monotonic(), _active_opens()
    proc.communicate(timeout=120)
    return {"samples": samples, "leaves": leaves, "inclusive": inclusive,
            "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "requests": opens1 - opens0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"locust": [], "harness": []}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        service = serve_reference(ServeOptions(workers=2), tmp / "service.log")
        try:
            for r in range(args.rounds):
                for kind in list(rows)[::1 if r % 2 == 0 else -1]:
                    res = run_one(kind, service.url, args.duration, tmp)
                    res["rps"] = res["requests"] / res["wall_s"]
                    res["us_per_request"] = 1e6 * res["cpu_s"] / res["requests"]
                    rows[kind].append(res)
                    print(f"round {r + 1} {kind}: {res['rps']:.0f} req/s, "
                          f"{res['us_per_request']:.0f} µs CPU per request", flush=True)
        finally:
            service.stop()
    for kind, results in rows.items():
        us = statistics.median(x["us_per_request"] for x in results)
        rps = statistics.median(x["rps"] for x in results)
        total: collections.Counter = collections.Counter()
        for x in results:
            total.update(x["samples"])
        n = sum(total.values())
        print(f"\n{kind}: {rps:.0f} req/s, {us:.0f} µs of CPU per request; on-CPU samples "
              f"({n}) by owner, with their share of the µs per request:")
        for owner, count in total.most_common(14):
            print(f"  {owner:<40} {100 * count / n:5.1f} %  {us * count / n:6.1f} µs")
        leaves: collections.Counter = collections.Counter()
        for x in results:
            leaves.update(x["leaves"])
        print("  innermost functions:")
        for leaf, count in leaves.most_common(20):
            print(f"    {100 * count / n:5.1f} %  {leaf}")
    _print_inclusive(rows)
    return 0


def _print_inclusive(rows: dict[str, list[dict]]) -> None:
    """µs per request of each function (inclusive), median over rounds, by difference."""
    per: dict[str, dict[str, float]] = {}
    for kind, results in rows.items():
        names = set().union(*(x["inclusive"] for x in results))
        us_per_sample = [x["us_per_request"] / sum(x["samples"].values()) for x in results]
        for name in names:
            per.setdefault(name, {})[kind] = statistics.median(
                u * x["inclusive"].get(name, 0)
                for u, x in zip(us_per_sample, results, strict=True))
    diff = sorted(per.items(), key=lambda kv: kv[1].get("locust", 0) - kv[1].get("harness", 0))
    print("\nper function, inclusive µs per request (medians): harness, bare Locust, difference")
    for name, us in diff[:25]:
        h, b = us.get("harness", 0.0), us.get("locust", 0.0)
        print(f"  {h:7.1f} {b:7.1f} {h - b:+7.1f}  {name[:90]}")


if __name__ == "__main__":
    sys.exit(main())
