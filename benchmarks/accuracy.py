"""Accuracy against a known truth: the harness's numbers vs the server's own record.

    .venv/bin/python benchmarks/accuracy.py [--rounds 3] [--rate 50] [--duration 20] [--quick]

Two experiments against tests/known_latency_server.py (not the reference service), loaded
through `harness run --target` in the open model with constant arrivals:

1. **Steady** (lognormal latency, median 10 ms, sigma 0.5, plus 1 % at 60 ms; stages
   named ``wibble``/``quux``/``total``, names the harness has never seen): the harness's
   p50/p90/p99/p99.9 of each stage against the server's log of the values it sent, and the
   client percentiles against the server's own service time per request. The client time
   is the service time plus two HTTP stacks (the residual), so that row shows the cost of
   the stacks, not an error of the histograms.
2. **Stall** (constant 5 ms, the whole server frozen for ``--stall`` s in the middle of
   the run): the corrected percentiles against the analytic coordinated-omission answer,
   the uncorrected ones beside them, and bare Locust's own percentiles (its ``--json``
   stats, Locust's percentile algorithm) for the same server, stall and rate.

Analytic answer for the stall: N requests at a constant rate R over the measured span;
the M = R x D whose intended start falls in the stall [t0, t0 + D) complete at t0 + D + s,
so their corrected latencies are s + j / R (j = 1..M) and the other N - M are s. The
value at rank r (HdrHistogram's definition, r = round(p / 100 x N)) is s for r <= N - M,
else s + (r - N + M) / R. s is the run's own uncorrected median (what a request costs
once sent; the stalled starts are far fewer than half). The stall-dominated tail (ranks
above N - M) is what is tested; below it the analytic answer is s and the difference is
the spread of the client stack and the load generator's own lateness on the machine.
The pool is 10 users, fewer than R x D: during the stall every user waits, the intended
starts pile up unsent, and the uncorrected latency (from the actual send) no longer sees
them; bare Locust runs the same 10 users with ``constant_throughput``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from known_latency_server import read_log, start_subprocess  # noqa: E402

from harness import stats  # noqa: E402
from harness.rundir import RunDir  # noqa: E402

PY = sys.executable
LOCUSTFILE = ROOT / "benchmarks" / "locustfiles" / "known_get.py"
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STAGES = ("wibble", "quux", "total")
STALL_USERS = 10
STEADY_ARGS = ["--latency-ms", "10", "--lognormal-sigma", "0.5", "--tail-prob", "0.01",
               "--tail-ms", "60", "--stages", "wibble,quux", "--split", "0.4,0.6",
               "--total-name", "total"]


def hdr_rank(p: float, n: int) -> int:
    """HdrHistogram's rank of the p-th percentile of n values: round(p/100 x n), >= 1.
    (Rounded, not ceil'd: 99.9 / 100 x 1000 is 999.0000000000001 in floating point.)"""
    return max(1, int(p * n / 100.0 + 0.5))


def rank_percentile(values: list[int], p: float) -> int:
    """The value at HdrHistogram's rank of the p-th percentile of the sorted values."""
    if not values:
        raise ValueError("values must not be empty")
    ordered = sorted(values)
    return ordered[hdr_rank(p, len(ordered)) - 1]


def locust_percentile(response_times: dict[str, int], total: int, p: float) -> float:
    """Locust's own percentile of its rounded response-time dict (locust.stats
    calculate_response_time_percentile, restated so this process never imports locust)."""
    wanted = int(total * p / 100.0)
    seen = 0
    for rt, count in sorted(((float(k), v) for k, v in response_times.items()), reverse=True):
        seen += count
        if total - seen <= wanted:
            return rt
    return 0.0


def harness_target_run(url: str, out: Path, *, rate: float, duration: float, users: int,
                       warmup: float = 0.0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [PY, "-m", "harness.cli", "run", str(LOCUSTFILE), "--target", url, "--rate",
           f"{rate:g}", "--arrival", "constant", "--users", str(users), "--duration",
           f"{duration:g}s", "--warmup", f"{warmup:g}s", "--no-profile", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=duration + warmup + 120)
    dirs = [p for p in out.iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"harness run left {len(dirs)} run directories (exit "
                           f"{done.returncode}): {done.stderr[-2000:]}")
    return dirs[0]


def _truth_rows(log: Path) -> list[dict[str, str]]:
    return [r for r in read_log(log) if r["path"] == "/predict"]


def steady(out: Path, *, rate: float, duration: float) -> list[dict]:
    """Experiment 1: rows of (series, p, harness µs, truth µs, error µs, allowed µs)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "truth.csv"
    proc, port = start_subprocess(["--log", str(log), *STEADY_ARGS])
    try:
        run = RunDir(harness_target_run(f"http://127.0.0.1:{port}", out / "runs", rate=rate,
                                        duration=duration, users=max(8, int(rate * 0.2))))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    truth = _truth_rows(log)
    rows = []
    series = {f"stage {s}": ([int(r[f"{s}_us"]) for r in truth], run.histogram("stage", stage=s))
              for s in STAGES}
    series["client vs service_us"] = ([int(r["service_us"]) for r in truth],
                                      run.histogram("client_uncorrected"))
    for name, (values, hist) in series.items():
        got = stats.percentiles(hist, PERCENTILES)
        for p in PERCENTILES:
            want = rank_percentile(values, p)
            rows.append({"series": name, "p": p, "harness_us": got[p], "truth_us": want,
                         "error_us": got[p] - want, "allowed_us": 0.01 * want + 50,
                         "n_harness": hist.get_total_count(), "n_truth": len(values)})
    return rows


def bare_locust_stall(url: str, out: Path, *, rate: float, duration: float,
                      users: int) -> dict:
    """Bare Locust at the same rate (constant_throughput per user): its --json stats."""
    env = {**os.environ, "KNOWN_USER_RPS": f"{rate / users:g}"}
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "locust"), "-f", str(LOCUSTFILE), "--headless", "-u",
         str(users), "-r", str(users), "-t", f"{duration:g}s", "-H", url, "--json",
         "--only-summary", "--loglevel", "ERROR"],
        cwd=out, env=env, capture_output=True, text=True, timeout=duration + 60)
    entries = json.loads(done.stdout)
    (entry,) = [e for e in entries if e["name"] == "predict"]
    return entry


def stall(out: Path, *, rate: float, duration: float, stall_at: float,
          stall_s: float, with_locust: bool = True) -> list[dict]:
    """Experiment 2: corrected / uncorrected / analytic / Locust per percentile."""
    server = ["--latency-ms", "5", "--stall", f"{stall_at:g}:{stall_s:g}"]
    # A pool smaller than rate x stall: during the stall the users are all waiting, so the
    # intended starts pile up unsent, which is exactly what coordinated omission hides.
    users = STALL_USERS
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stall-truth.csv"
    proc, port = start_subprocess(["--log", str(log), *server])
    try:
        run = RunDir(harness_target_run(f"http://127.0.0.1:{port}", out / "stall-runs",
                                        rate=rate, duration=duration, users=users))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    locust = {"response_times": {}, "num_requests": 0}
    if with_locust:
        proc, port = start_subprocess(server)
        try:
            locust = bare_locust_stall(f"http://127.0.0.1:{port}", out, rate=rate,
                                       duration=duration, users=users)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    corrected = run.histogram("client")
    uncorrected = run.histogram("client_uncorrected")
    n = corrected.get_total_count()
    # what a request costs once sent: the uncorrected median (stalled starts are R x D of
    # N, well under half). Not the corrected one: a load generator lagging its schedule on
    # a busy machine adds its lateness to every corrected value, stalled or not, but a
    # request intended during the stall completes at the stall's end + s however late
    # it was sent.
    s_us = stats.percentiles(uncorrected, [50.0])[50.0]
    m = round(rate * stall_s)
    got_c = stats.percentiles(corrected, PERCENTILES)
    got_u = stats.percentiles(uncorrected, PERCENTILES)
    rows = []
    for p in PERCENTILES:
        r = hdr_rank(p, n)
        analytic = s_us if r <= n - m else s_us + (r - n + m) / rate * 1e6
        rows.append({"p": p, "corrected_us": got_c[p], "uncorrected_us": got_u[p],
                     "analytic_us": analytic, "in_stall": r > n - m,
                     "rel_error": (got_c[p] - analytic) / analytic,
                     "locust_us": 1000 * locust_percentile(
                         locust["response_times"], locust["num_requests"], p),
                     "n": n, "locust_n": locust["num_requests"],
                     "truth_n": len(_truth_rows(log))})
    return rows


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def format_results(steady_rounds: list[list[dict]], stall_rounds: list[list[dict]]) -> list[str]:
    lines = ["### Steady: harness vs the server's record (medians over rounds; ms)", "",
             "| series | p | harness | truth | error | allowed (1 % + 50 µs) | within |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for i, row in enumerate(steady_rounds[0]):
        per = [rounds[i] for rounds in steady_rounds]
        med = {k: statistics.median(r[k] for r in per)
               for k in ("harness_us", "truth_us", "error_us", "allowed_us")}
        ok = sum(abs(r["error_us"]) <= r["allowed_us"] for r in per)
        lines.append(f"| {row['series']} | {row['p']:g} | {_ms(med['harness_us'])} | "
                     f"{_ms(med['truth_us'])} | {_ms(med['error_us'])} | "
                     f"{_ms(med['allowed_us'])} | {ok}/{len(per)} |")
    lines += ["", "requests per round (harness / server log): " + ", ".join(
        f"{r[0]['n_harness']}/{r[0]['n_truth']}" for r in steady_rounds), "",
        "### Stall: corrected vs the analytic coordinated-omission answer (medians; ms)", "",
        "| p | rank in the stall? | analytic | corrected | error | uncorrected | bare Locust |",
        "|---:|---|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(stall_rounds[0]):
        per = [rounds[i] for rounds in stall_rounds]
        med = {k: statistics.median(r[k] for r in per)
               for k in ("analytic_us", "corrected_us", "rel_error", "uncorrected_us",
                         "locust_us")}
        lines.append(f"| {row['p']:g} | {'yes' if row['in_stall'] else 'no'} | "
                     f"{_ms(med['analytic_us'])} | "
                     f"{_ms(med['corrected_us'])} | {100 * med['rel_error']:+.1f} % "
                     f"(max {100 * max(abs(r['rel_error']) for r in per):.1f} %) | "
                     f"{_ms(med['uncorrected_us'])} | {_ms(med['locust_us'])} |")
    lines += ["", "requests per round (harness / server log / bare Locust): " + ", ".join(
        f"{r[0]['n']}/{r[0]['truth_n']}/{r[0]['locust_n']}" for r in stall_rounds)]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--stall", type=float, default=1.0, help="stall length, s")
    ap.add_argument("--quick", action="store_true", help="1 round of 8 s runs")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 8.0
    if args.rounds < 1 or args.rate <= 0 or args.duration < 4 * args.stall:
        ap.error("need --rounds >= 1, --rate > 0 and --duration >= 4 x --stall")
    out = args.out or Path(tempfile.mkdtemp(prefix="accuracy-"))
    t0 = time.time()
    steady_rounds, stall_rounds = [], []
    for r in range(args.rounds):
        steady_rounds.append(steady(out / f"r{r}", rate=args.rate, duration=args.duration))
        stall_rounds.append(stall(out / f"r{r}", rate=args.rate, duration=args.duration,
                                  stall_at=args.duration / 2, stall_s=args.stall))
        print(f"round {r} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print("\n".join(format_results(steady_rounds, stall_rounds)))
    print(f"\n{args.rounds} rounds, {args.duration:g} s at {args.rate:g} req/s (constant "
          f"arrivals), stall {args.stall:g} s; load average {os.getloadavg()[0]:.1f}; "
          f"wall {time.time() - t0:.0f} s; runs in {out}")
    if args.json:
        args.json.write_text(json.dumps({"steady": steady_rounds, "stall": stall_rounds},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
