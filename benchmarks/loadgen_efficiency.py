"""Load-generator efficiency: bare Locust vs the harness vs wrk, side by side in one run.

Each contender loads the same endpoint of one reference service (started once) with
the same number of connections and no think time, in rounds (A B C A B C ...), so
that machine noise hits all of them alike. For each we measure:

- requests/s: completed requests over the wall time of the load;
- requests per load-generator CPU-second: completed requests over the CPU time
  (user + system) of the load generator's whole process tree, taken from
  ``getrusage(RUSAGE_CHILDREN)`` around each run (so the harness's own main process,
  its driver subprocess and its psutil sampler all count against it).

The service shares the 2 cores with the load generator: the ratios, measured in
the same rounds, are what to read, not the absolute numbers.

    .venv/bin/python benchmarks/loadgen_efficiency.py --duration 10 --rounds 3
    .venv/bin/python benchmarks/loadgen_efficiency.py --duration 10 --rounds 3 --endpoint predict
    .venv/bin/python benchmarks/loadgen_efficiency.py --fit-durations 3,12 --rounds 2
    .venv/bin/python benchmarks/loadgen_efficiency.py --duration 20 --rounds 4 --pair
    .venv/bin/python benchmarks/loadgen_efficiency.py --duration 20 --rounds 4 --trio

Before each run the benchmark waits (up to 75 s) for the previous run's connections to
leave TIME_WAIT (``drain_timewait``): the service closes every connection, and a full port
table made each run's result depend on what ran before it.

Requests are counted by each tool itself: Locust's ``--json`` stats, the harness's
load.json (measured requests + failures) plus its warm-up's requests (intervals.jsonl rows
marked ``warmup``: the load generator sent them and paid their CPU), wrk's summary line;
requests/s over each tool's whole load time (the harness's includes its default 2 s
warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.run.target import ServeOptions, serve_reference  # noqa: E402

LOCUSTFILE = ROOT / "benchmarks" / "locustfiles" / "health_fasthttp.py"
PREDICT = ROOT / "benchmarks" / "locustfiles" / "predict_fasthttp.py"


def _timewait() -> int:
    """Sockets in TIME_WAIT on this host (/proc/net/tcp and tcp6, state 06)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh, None)
                n += sum(1 for line in fh if line.split()[3:4] == ["06"])
        except OSError:
            pass
    return n


#: a run starts once fewer sockets than this wait in TIME_WAIT (at most DRAIN_MAX_S)
DRAIN_BELOW = 1000
DRAIN_MAX_S = 75.0


def drain_timewait() -> tuple[int, float]:
    """Wait for the previous run's closed connections to leave TIME_WAIT. The reference
    service's gunicorn sync workers close every connection, so a 20 s run at ~2500 req/s
    leaves ~50 000 sockets in TIME_WAIT for 60 s, more than the 28 000 local ports: the next
    run's connects then search a full port table (kernel CPU of the load generator), and
    the contenders' order decided their results (2026-12-07: every contender's rate fell
    round after round, 2847 -> 2361 req/s for bare Locust). Returns (sockets at the start,
    seconds waited)."""
    t0 = time.monotonic()
    while (n := _timewait()) >= DRAIN_BELOW and time.monotonic() - t0 < DRAIN_MAX_S:
        time.sleep(1.0)
    return n, time.monotonic() - t0


def _active_opens() -> int:
    """TCP connections this machine opened so far (/proc/net/snmp ``Tcp: ActiveOpens``)."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_locust(url: str, locustfile: Path, users: int, duration: int, workdir: Path) -> dict:
    cpu0, t0 = _children_cpu(), time.monotonic()
    # --json, not --csv: the CSV stats miss the requests of the last second
    res = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users),
         "-r", str(users), "-t", f"{duration}s", "-H", url, "--json",
         "--only-summary", "--loglevel", "WARNING"],
        check=True, capture_output=True, text=True, cwd=workdir,
    )
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    count = sum(e["num_requests"] for e in json.loads(res.stdout))
    return {"requests": count, "wall_s": wall, "cpu_s": cpu}


def run_harness(url: str, locustfile: Path, users: int, duration: int, workdir: Path,
                extra: list[str]) -> dict:
    out = workdir / "runs"
    cpu0, t0 = _children_cpu(), time.monotonic()
    args = [sys.executable, "-m", "harness.cli", "run", str(locustfile), "--target", url,
            "--users", str(users), "--duration", f"{duration}s", "--out", str(out), "--json",
            *extra]
    res = subprocess.run(args, capture_output=True, text=True)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    if res.returncode not in (0, 3):
        raise RuntimeError(f"harness run failed ({res.returncode}): {res.stderr[-2000:]}")
    run_dir = sorted(out.iterdir(), key=lambda p: p.stat().st_mtime)[-1]
    load = json.loads((run_dir / "load.json").read_text())
    measured = load["measured"]["requests"] + load["measured"]["failures"]
    # the warm-up's requests (the default 2 s) were sent too: the load generator paid their
    # CPU, so they count (before 2026-12-06 they did not: ~2 s x the rate went uncounted)
    warm = sum(row.get("requests", 0) + row.get("failures", 0)
               for row in map(json.loads, (run_dir / "intervals.jsonl").read_text().splitlines())
               if row.get("warmup"))
    status = run_dir / "profile" / "status.json"
    profiler = json.loads(status.read_text()).get("cpu_s") if status.exists() else None
    return {"requests": measured + warm, "measured": measured, "warmup_requests": warm,
            "load_s": duration + float(load.get("warmup_s") or 0.0), "wall_s": wall,
            "cpu_s": cpu, "profiler_cpu_s": profiler}


# the same bytes as benchmarks/locustfiles/predict_fasthttp.py sends
WRK_PREDICT = """wrk.method = "POST"
wrk.body = '{"instances": [{"entity_id": 4242, "features": {"amount": 42.0}}]}'
wrk.headers["Content-Type"] = "application/json"
"""


def run_wrk(url: str, path: str, users: int, duration: int, script: Path | None) -> dict:
    cpu0, t0 = _children_cpu(), time.monotonic()
    res = subprocess.run(["wrk", "-t1", f"-c{users}", f"-d{duration}s",
                          *(["-s", str(script)] if script else []), url + path],
                         check=True, capture_output=True, text=True)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    match = re.search(r"(\d+) requests in", res.stdout)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{res.stdout}")
    return {"requests": int(match.group(1)), "wall_s": wall, "cpu_s": cpu}


def fit_fixed_cost(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares of CPU seconds = fixed + marginal x requests: (fixed s, marginal s)."""
    if len({n for n, _ in points}) < 2:
        raise ValueError(f"need runs with at least two request counts (got {points!r})")
    mn = statistics.mean(n for n, _ in points)
    mc = statistics.mean(c for _, c in points)
    slope = sum((n - mn) * (c - mc) for n, c in points) / sum((n - mn) ** 2 for n, _ in points)
    return mc - slope * mn, slope


def fixed_cost_table(target_url: str, locustfile: Path, users: int, durations: list[int],
                     rounds: int, tmpdir: Path) -> list[str]:
    """Bare Locust and the harness (no py-spy) at several durations: fixed vs per request."""
    tools = {"bare Locust": lambda w, d: run_locust(target_url, locustfile, users, d, w),
             "harness, psutil 4 Hz, no py-spy": lambda w, d: run_harness(
                 target_url, locustfile, users, d, w, ["--no-profile"])}
    points: dict[str, list[tuple[int, float]]] = {name: [] for name in tools}
    for rnd in range(rounds):
        for d in durations:
            for name, fn in tools.items():
                work = tmpdir / f"fit-{rnd}-{d}-{abs(hash(name))}"
                work.mkdir()
                drain_timewait()
                r = fn(work, d)
                points[name].append((r["requests"], r["cpu_s"]))
    lines = ["| load generator | fixed CPU per run | marginal CPU per request | "
             "marginal requests per CPU-s |", "|---|---:|---:|---:|"]
    for name, pts in points.items():
        fixed, marginal = fit_fixed_cost(pts)
        lines.append(f"| {name} | {fixed:.2f} s | {marginal * 1e3:.3f} ms | "
                     f"{1 / marginal:.0f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per contender")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", type=int, default=8, help="concurrent users/connections")
    ap.add_argument("--endpoint", choices=["health", "predict"], default="health")
    ap.add_argument("--pair", action="store_true",
                    help="only bare Locust and the default harness (the paired figure)")
    ap.add_argument("--trio", action="store_true",
                    help="bare Locust, the harness without py-spy and the default harness "
                         "(py-spy's share)")
    ap.add_argument("--fit-durations", default=None,
                    help="e.g. 3,12: instead of the table, fit fixed + per-request CPU of bare "
                         "Locust and the harness over runs of these durations")
    args = ap.parse_args()
    if args.fit_durations:
        durations = [int(x) for x in args.fit_durations.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            target = serve_reference(ServeOptions(workers=2), Path(tmp) / "service.log")
            try:
                lines = fixed_cost_table(target.url, LOCUSTFILE if args.endpoint == "health"
                                         else PREDICT, args.users, durations, args.rounds,
                                         Path(tmp))
            finally:
                target.stop()
        print("\n".join(lines))
        return 0

    locustfile = LOCUSTFILE if args.endpoint == "health" else PREDICT
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        target = serve_reference(ServeOptions(workers=2), tmpdir / "service.log")
        try:
            script = None
            if args.endpoint == "predict":
                script = tmpdir / "predict.lua"
                script.write_text(WRK_PREDICT)
            path = "/healthz" if args.endpoint == "health" else "/v1/models/fraud/predict"
            # each collector on in turn: psutil cannot be switched off in a run, so the
            # cheapest harness row samples it at 1 Hz; then psutil at its default 4 Hz;
            # then py-spy too (the default run)
            variants = {"harness, psutil 1 Hz, no py-spy": ["--no-profile", "--resources-hz", "1"],
                        "harness, psutil 4 Hz, no py-spy": ["--no-profile"],
                        "harness, all collectors (default)": []}
            contenders = {"bare Locust (FastHttpUser)": lambda w: run_locust(
                target.url, locustfile, args.users, args.duration, w)}
            for label, extra in variants.items():
                contenders[label] = lambda w, extra=extra: run_harness(
                    target.url, locustfile, args.users, args.duration, w, extra)
            contenders["wrk (1 thread)"] = lambda w: run_wrk(
                target.url, path, args.users, args.duration, script)
            if args.pair or args.trio:
                keep = ["bare Locust (FastHttpUser)", "harness, all collectors (default)"]
                keep += ["harness, psutil 4 Hz, no py-spy"] if args.trio else []
                contenders = {k: v for k, v in contenders.items() if k in keep}
            results: dict[str, list[dict]] = {name: [] for name in contenders}
            names = list(contenders)
            for rnd in range(args.rounds):
                # the order rotates each round: no contender always runs first (or right
                # after the same one)
                for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                    fn = contenders[name]
                    work = tmpdir / f"{rnd}-{len(results[name])}-{abs(hash(name))}"
                    work.mkdir()
                    waiting, waited = drain_timewait()
                    opened = _active_opens()
                    r = fn(work)
                    # the kernel's count of connections the load generator opened: the
                    # service closes each one, so one per request (plus the harness's few
                    # probes): a check on each tool's own count
                    r["tcp_opens"] = _active_opens() - opened
                    r["timewait_at_start"], r["drained_s"] = waiting, round(waited, 1)
                    r["rps"] = r["requests"] / r.get("load_s", args.duration)
                    r["per_cpu_s"] = r["requests"] / r["cpu_s"] if r["cpu_s"] > 0 else 0.0
                    results[name].append(r)
                    print(f"round {rnd + 1} {name}: {r['rps']:.0f} req/s, "
                          f"{r['per_cpu_s']:.0f} req per loadgen CPU-s ({r['requests']} "
                          f"requests counted, {r['tcp_opens']} TCP connections opened; "
                          f"TIME_WAIT at the start {waiting}, waited {waited:.0f} s)",
                          file=sys.stderr)
        finally:
            target.stop()

    # py-spy is the harness's child, so its CPU is in the harness's getrusage above, but it
    # samples the *service* (on the service's host in a distributed run): the same runs
    # again with py-spy's own CPU (from its rusage, in profile/status.json) taken out.
    default = results["harness, all collectors (default)"]
    if all(r.get("profiler_cpu_s") is not None for r in default):
        results["  the same, py-spy's CPU not counted"] = [
            {**r, "cpu_s": r["cpu_s"] - r["profiler_cpu_s"],
             "per_cpu_s": r["requests"] / (r["cpu_s"] - r["profiler_cpu_s"])} for r in default]
        spent = [r["profiler_cpu_s"] / args.duration for r in default]
        print(f"py-spy's CPU: {100 * statistics.median(spent):.1f} % of a core (median; "
              f"{100 * min(spent):.1f}..{100 * max(spent):.1f})", file=sys.stderr)
    base = statistics.median(r["per_cpu_s"] for r in results["bare Locust (FastHttpUser)"])
    wrk = results.get("wrk (1 thread)")
    wrk_base = statistics.median(r["per_cpu_s"] for r in wrk) if wrk else None
    print(f"\nendpoint: {args.endpoint}; {args.users} connections; {args.duration} s per run; "
          f"{args.rounds} rounds interleaved; medians (min..max); {os.cpu_count()} CPUs\n")
    print("| load generator | requests/s | requests per loadgen CPU-s | vs bare Locust | "
          "vs bare Locust, paired per round |" + (" vs wrk |" if wrk_base else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if wrk_base else ""))
    locust = results["bare Locust (FastHttpUser)"]
    for name, rs in results.items():
        rps = [r["rps"] for r in rs]
        eff = [r["per_cpu_s"] for r in rs]
        med = statistics.median(eff)
        # Each round's ratio to the bare Locust run of the same round: the machine's drift
        # between rounds cancels (bare Locust alone moved 1114..1885 between rounds).
        paired = [r["per_cpu_s"] / b["per_cpu_s"] for r, b in zip(rs, locust, strict=True)
                  if b["per_cpu_s"] > 0]
        pair = (f"{statistics.median(paired):.2f} ({min(paired):.2f}..{max(paired):.2f})"
                if paired else "-")
        row = (f"| {name} | {statistics.median(rps):.0f} ({min(rps):.0f}..{max(rps):.0f}) | "
               f"{med:.0f} ({min(eff):.0f}..{max(eff):.0f}) | {med / base:.2f} | {pair} |")
        if wrk_base:
            row += f" {med / wrk_base:.3f} |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
