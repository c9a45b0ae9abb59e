"""Soak: a long fixed-rate run with gunicorn worker recycling; is anything growing or lost?

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--rate 20] [--max-requests 500]
        [--sample-s 10] [--out /tmp/soak] [--locustfile benchmarks/locustfiles/health_fasthttp.py]

``--max-requests 0`` turns recycling off; ``--locustfile`` loads another endpoint (the
harness's memory at a high rate: ``--locustfile benchmarks/locustfiles/health_fasthttp.py
--rate 1000``); "nothing lost" compares with the service's prediction counter, so it is
only checked for locustfiles that send predictions.

Starts the reference service (2 sync workers, ``--max-requests N --max-requests-jitter
N/10``, so each worker is replaced every ~N requests) and ``harness run --target`` at a fixed
open-model rate for the whole time (no warm-up, no profiler). Every ``--sample-s`` it records
the RSS of the harness's process tree and of the gunicorn tree, and the file count and bytes
of the service's ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client writes one file per worker
pid and metric type and never deletes counters or histograms of dead workers: with recycling
that directory is the known unbounded grower).

At the end: growth rates (least-squares slope over the second half of the run, when start-up
is over) in MiB/min and files/min, worker generations seen, and "nothing lost": the requests
the driver counted (load.json) against the requests the service counted
(``refsvc_requests_total``) and the failures. Prints a markdown table; writes
``soak.json`` with every sample into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from reference_service.launch import cleanup, gunicorn_command, wait_ready  # noqa: E402

LOCUSTFILE = ROOT / "tests" / "locustfiles" / "fraud_simple.py"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_mib(pid: int) -> tuple[float, int]:
    """(RSS of the process and its descendants in MiB, number of processes)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20, len(procs)


def harness_rss_by_role(pid: int) -> dict[str, float]:
    """RSS in MiB of the orchestrator (``harness run``) and of its load driver, apart: the
    tree's total cannot say which of them grows."""
    out = {"orchestrator_rss_mib": 0.0, "driver_rss_mib": 0.0}
    try:
        root = psutil.Process(pid)
        out["orchestrator_rss_mib"] = root.memory_info().rss / 2**20
        for child in root.children(recursive=True):
            if "harness.load.driver" in " ".join(child.cmdline()):
                out["driver_rss_mib"] += child.memory_info().rss / 2**20
    except psutil.Error:
        pass
    return out


def dir_usage(path: Path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of the second half, per minute."""
    half = len(ts) // 2
    xs, vs = ts[half:], ys[half:]
    if len(xs) < 2:
        return float("nan")
    mx, my = sum(xs) / len(xs), sum(vs) / len(vs)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (v - my) for x, v in zip(xs, vs, strict=True)) / den if den \
        else float("nan")


def served_requests(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "refsvc_requests_total")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=500)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/soak"))
    p.add_argument("--locustfile", type=Path, default=LOCUSTFILE)
    a = p.parse_args(argv)
    if not a.minutes > 0 or not a.rate > 0 or not (a.max_requests == 0 or a.max_requests >= 10) \
            or not a.sample_s > 0:
        print("soak: minutes, rate, sample-s must be > 0 and max-requests 0 (off) or >= 10",
              file=sys.stderr)
        return 2
    if not a.locustfile.is_file():
        print(f"soak: --locustfile must be an existing file (got {str(a.locustfile)!r})",
              file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv_, extra = gunicorn_command(port=port, workers=2)
    # Worker recycling, the setting under test; jitter so both workers do not restart at once.
    if a.max_requests:
        argv_[-1:-1] = ["--max-requests", str(a.max_requests),
                        "--max-requests-jitter", str(max(1, a.max_requests // 10))]
    env = {**os.environ, **extra}
    env.pop("REFSVC_ADMIN_TOKEN", None)
    prom = Path(extra["PROMETHEUS_MULTIPROC_DIR"])
    url = f"http://127.0.0.1:{port}"
    with open(a.out / "service.log", "wb") as log:
        service = subprocess.Popen(argv_, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    harness = None
    samples: list[dict[str, Any]] = []
    workers_seen: set[int] = set()
    try:
        wait_ready(url, 120)
        duration_s = a.minutes * 60
        harness = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(a.locustfile), "--target", url,
             "--rate", str(a.rate), "--duration", f"{duration_s:g}s", "--warmup", "0s",
             "--no-profile", "--out", str(a.out / "runs"), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        t0 = time.monotonic()
        while harness.poll() is None:
            h_rss, h_n = tree_rss_mib(harness.pid)
            s_rss, s_n = tree_rss_mib(service.pid)
            files, size = dir_usage(prom)
            try:
                workers_seen.update(c.pid for c in psutil.Process(service.pid).children())
            except psutil.NoSuchProcess:
                pass
            samples.append({"t": round(time.monotonic() - t0, 1), "harness_rss_mib": h_rss,
                            "harness_procs": h_n, "service_rss_mib": s_rss,
                            "service_procs": s_n, "prom_files": files, "prom_bytes": size,
                            **harness_rss_by_role(harness.pid)})
            time.sleep(a.sample_s)
        out, err = harness.communicate()
        served = served_requests(url)
    finally:
        if harness is not None and harness.poll() is None:
            harness.kill()
        os.killpg(service.pid, 9)
        service.wait()
        cleanup(extra)
    run_line = next((ln for ln in err.splitlines() + out.splitlines()
                     if "run directory" in ln), "")
    runs = sorted((a.out / "runs").iterdir(), key=lambda d: d.stat().st_mtime)
    load = json.loads((runs[-1] / "load.json").read_text())
    sent = load["measured"]["requests"]
    # The last sample can fall in the harness's shutdown (processes exiting): leave it out.
    steady = samples[:-1] if len(samples) > 4 else samples
    ts = [s["t"] for s in steady]
    result = {
        "minutes": a.minutes, "rate": a.rate, "max_requests": a.max_requests,
        "exit_code": harness.returncode, "run": str(runs[-1]), "run_line": run_line,
        "driver_requests": sent, "driver_failures": load["measured"]["failures"],
        "service_requests": served, "errors": load.get("errors"),
        "worker_generations": len(workers_seen),
        "growth_per_min": {k: slope_per_min(ts, [s[k] for s in steady])
                           for k in ("harness_rss_mib", "orchestrator_rss_mib", "driver_rss_mib",
                                     "service_rss_mib", "prom_files", "prom_bytes")},
        "first": samples[0] if samples else None, "last": samples[-1] if samples else None,
        "samples": samples,
    }
    (a.out / "soak.json").write_text(json.dumps(result, indent=2))
    g = result["growth_per_min"]
    first, last = result["first"] or {}, result["last"] or {}
    print(f"soak: {a.minutes:g} min at {a.rate:g} req/s, max_requests {a.max_requests}, "
          f"{len(workers_seen)} worker pids seen; harness exit {harness.returncode}")
    print("| quantity | start | end | slope, 2nd half (per min) |")
    print("|---|---:|---:|---:|")
    for key, unit in (("harness_rss_mib", "MiB"), ("orchestrator_rss_mib", "MiB"),
                      ("driver_rss_mib", "MiB"), ("service_rss_mib", "MiB"),
                      ("prom_files", "files"), ("prom_bytes", "bytes")):
        print(f"| {key} | {first.get(key, 0):.1f} | {last.get(key, 0):.1f} | "
              f"{g[key]:+.3f} {unit} |")
    print(f"| requests: driver / service / failures | {sent} | {served:.0f} | "
          f"{load['measured']['failures']} |")
    if not served:
        print("(the service counts prediction requests only: nothing-lost is not checked "
              "for this locustfile)")
    print(f"unanswered at the stop: {load.get('unanswered')} "
          f"(waited over 1 s: {load.get('unanswered_long')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
