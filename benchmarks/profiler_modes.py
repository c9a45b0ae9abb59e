"""py-spy blocking or not: its cost to the service and whether its on-CPU samples are CPU,
on three services, in paired runs of `harness run`.

Services (each started once and loaded as an external target, so the stage map is chosen
automatically too):

- ``reference``: the reference service under gunicorn, 2 sync workers (single-threaded
  workers), ``scenarios/production.py -- --think-time 0``;
- ``fastapi``: ``python -m examples.fastapi_service.serve --workers 1`` (uvicorn, one
  worker, asyncio, a Redis store), ``examples/fastapi_service/locustfile.py``;
- ``mlserver``: MLServer 1.7.1 with ``--parallel-workers N`` (default 1: a main process
  with ~17 threads handing requests to an inference worker over multiprocessing queues),
  from benchmarks/mlserver_target.py (its own venv), ``benchmarks/mlserver/locustfile.py``.

Each round runs the three profiler modes back to back, in an order rotated by round:
``none`` (``--no-profile``), ``blocking`` (``--profile-blocking``, py-spy's own default)
and ``nonblocking`` (the harness's default), closed model, ``--users`` users. Per service
and mode it prints medians over the rounds of: throughput, p50 and p99, each mode's
throughput relative to ``none`` of the same round (the paired ratio), the service's CPU
(psutil), py-spy's own CPU and the share of its process it held stopped (blocking), its
errors per sample, the on-CPU check (samples as seconds against the kernel's CPU and
run-queue, profile/status.json ``oncpu_check``), and the stage map chosen with the
share left in ``other``.

    .venv/bin/python benchmarks/profiler_modes.py --rounds 3 --duration 15s --warmup 3s
    .venv/bin/python benchmarks/profiler_modes.py --services mlserver --parallel-workers 2
    .venv/bin/python benchmarks/profiler_modes.py --from-json a.json b.json   # tables again

On a shared machine the throughput columns move with other work: read the paired ratios,
and the self-check's cpu_contention in each run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

MODES = {"none": ["--no-profile"], "blocking": ["--profile-blocking"], "nonblocking": []}
LOAD = {
    "reference": (REPO / "scenarios" / "production.py", ["--", "--think-time", "0"]),
    "fastapi": (REPO / "examples" / "fastapi_service" / "locustfile.py", []),
    "mlserver": (REPO / "benchmarks" / "mlserver" / "locustfile.py", []),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def reference() -> Iterator[str]:
    from harness.run.target import ServeOptions, serve_reference

    with tempfile.TemporaryDirectory() as tmp:
        served = serve_reference(ServeOptions(workers=2), Path(tmp) / "service.log")
        try:
            yield served.url
        finally:
            served.stop()


@contextlib.contextmanager
def fastapi() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "examples.fastapi_service.serve", "--port",
                             str(port), "--workers", "1"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the FastAPI service did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@contextlib.contextmanager
def mlserver(parallel_workers: int) -> Iterator[str]:
    import mlserver_target as mt

    venv = mt.ensure_venv(mt.DEFAULT_VENV, "python3.11")
    mt.ensure_model(venv, mt.DEFAULT_WORKDIR, retrain=False)
    with mt.serving(venv, mt.DEFAULT_WORKDIR, parallel_workers, None) as server:
        yield server.url


def run_once(url: str, service: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    locustfile, after = LOAD[service]
    cmd = [str(REPO / ".venv" / "bin" / "harness"), "run", str(locustfile), "--target", url,
           "--users", str(args.users), "--duration", args.duration, "--warmup", args.warmup,
           "--out", str(args.out), "--tag", f"profile={mode}", "--tag", f"service={service}",
           *MODES[mode], *after]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("run directory: ")]
    if not line:
        raise RuntimeError(f"harness run failed ({out.returncode}): {out.stderr[-2000:]}")
    return figures(Path(line[-1].split()[2]), service, mode)


def figures(run: Path, service: str, mode: str) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    total = next(r for r in summary["requests"] if r["name"] == "*")
    res = summary.get("resources") or {}
    contention = next((c["detail"] for c in summary["self_check"]
                       if c["check"] == "cpu_contention"), "")
    out: dict[str, Any] = {
        "run": str(run), "service": service, "mode": mode,
        "rps": total["rps"], "p50_ms": total["latency"]["client"]["p50_us"] / 1000,
        "p99_ms": total["latency"]["client"]["p99_us"] / 1000,
        "service_cpu_pct": (res.get("service") or {}).get("cpu_mean_pct"),
        "contention": contention.split("share of the machine: ")[-1],
    }
    status_path = run / "profile" / "status.json"
    if mode != "none" and status_path.exists():
        status = json.loads(status_path.read_text())
        check, cost, smap = status.get("oncpu_check") or {}, status.get("cost") or {}, \
            status.get("stage_map") or {}
        out.update(samples=status["samples"], errors=status["errors"],
                   verdict=check.get("verdict"), sampled_s=check.get("sampled_s"),
                   wait_leaf_share=check.get("wait_leaf_share"),
                   cpu_s=check.get("cpu_s"), runq_s=check.get("runq_s"),
                   pyspy_core_pct=cost.get("pyspy_core_pct"),
                   paused_share=cost.get("paused_share"), stage_map=smap.get("name"),
                   chosen=smap.get("chosen"), other_share=smap.get("other_share"),
                   candidates={k: v["other_share"] for k, v in
                               (smap.get("candidates") or {}).items()},
                   shares=(summary.get("profile") or {}).get("oncpu", {}).get("shares"))
    return out


def _med(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    if len(ratios) == 1 or min(ratios) == max(ratios):
        return f"{statistics.median(ratios):.2f}"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})"


def table(results: list[dict[str, Any]]) -> list[str]:
    head = ["service", "mode", "req/s", "paired vs none (min..max)", "p50 ms", "p99 ms",
            "service CPU %", "service CPU ms/req", "py-spy % core", "paused (blocking)",
            "errors/samples", "sampled s : CPU s : run-queue s", "sampled / (CPU + run-queue)",
            "map (its largest other %)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for service in dict.fromkeys(r["service"] for r in results):
        mine = [r for r in results if r["service"] == service]
        base = {r["round"]: r["rps"] for r in mine if r["mode"] == "none"}
        for mode in MODES:
            rows = [r for r in mine if r["mode"] == mode]
            if not rows:
                continue
            ratios = [r["rps"] / base[r["round"]] for r in rows if base.get(r["round"])]
            err = [r["errors"] / max(r["samples"] + r["errors"], 1) for r in rows
                   if r.get("samples") is not None]
            fit = [r["sampled_s"] / (r["cpu_s"] + r["runq_s"]) for r in rows
                   if r.get("sampled_s") is not None and r.get("runq_s") is not None
                   and r["cpu_s"] + r["runq_s"] > 0]
            worst: dict[str, float] = {}
            for r in rows:
                if r.get("stage_map") and r.get("other_share") is not None:
                    worst[r["stage_map"]] = max(worst.get(r["stage_map"], 0.0), r["other_share"])
            maps = ", ".join(f"{n} ({100 * o:.1f})" for n, o in sorted(worst.items())) or "-"
            paused = _med(rows, "paused_share")
            per_req = [10 * r["service_cpu_pct"] / r["rps"] for r in rows
                       if r.get("service_cpu_pct") and r["rps"]]
            check = "-" if mode == "none" else (
                f"{_fmt(_med(rows, 'sampled_s'))} : {_fmt(_med(rows, 'cpu_s'))} : "
                f"{_fmt(_med(rows, 'runq_s'))}")
            lines.append(
                f"| {service} | {mode} | {_fmt(_med(rows, 'rps'))} | "
                f"{_ratio(ratios)} | "
                f"{_fmt(_med(rows, 'p50_ms'))} | {_fmt(_med(rows, 'p99_ms'))} | "
                f"{_fmt(_med(rows, 'service_cpu_pct'))} | "
                f"{_fmt(statistics.median(per_req) if per_req else None, '.2f')} | "
                f"{_fmt(_med(rows, 'pyspy_core_pct'))} | "
                f"{'-' if paused is None else f'{100 * paused:.1f} %'} | "
                f"{_fmt(100 * statistics.median(err) if err else None)} % | {check} | "
                f"{_fmt(statistics.median(fit) if fit else None, '.2f')} | {maps} |")
    return lines


def shares_table(results: list[dict[str, Any]]) -> list[str]:
    """Per service and mode: the median on-CPU share of each stage and of samples whose
    leaf is a waiting call (what the profile says, mode against mode)."""
    lines = ["| service | mode | on-CPU shares by stage (median %) | at a waiting call |",
             "|---|---|---|---|"]
    for service in dict.fromkeys(r["service"] for r in results):
        for mode in MODES:
            rows = [r for r in results if r["service"] == service and r["mode"] == mode
                    and r.get("shares")]
            if not rows:
                continue
            stages = sorted({k for r in rows for k in r["shares"]})
            med = {k: statistics.median(r["shares"].get(k, 0.0) for r in rows) for k in stages}
            text = ", ".join(f"{k} {100 * v:.1f}" for k, v in
                             sorted(med.items(), key=lambda kv: -kv[1]) if v >= 0.0005)
            waits = _med(rows, "wait_leaf_share")
            lines.append(f"| {service} | {mode} | {text} | "
                         f"{'-' if waits is None else f'{100 * waits:.0f} %'} |")
    return lines


def map_table(results: list[dict[str, Any]]) -> list[str]:
    """Per service and mode: the map chosen and every bundled map's "other" (median %)."""
    names = sorted({n for r in results for n in r.get("candidates") or {}})
    lines = ["| service | mode | chosen | " + " | ".join(f"other with {n}" for n in names)
             + " |", "|" + "---|" * (3 + len(names))]
    for service in dict.fromkeys(r["service"] for r in results):
        for mode in MODES:
            rows = [r for r in results if r["service"] == service and r["mode"] == mode
                    and r.get("candidates")]
            if not rows:
                continue
            chosen = ", ".join(sorted({f"{r['stage_map']} ({r['chosen']})" for r in rows}))
            cells = [statistics.median(r["candidates"][n] for r in rows
                                       if n in r["candidates"]) for n in names]
            lines.append(f"| {service} | {mode} | {chosen} | "
                         + " | ".join(f"{100 * c:.1f} %" for c in cells) + " |")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", default="reference,fastapi,mlserver")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--duration", default="15s")
    p.add_argument("--warmup", default="3s")
    p.add_argument("--parallel-workers", type=int, default=1, help="MLServer's")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "profiler-modes")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--from-json", type=Path, nargs="+", metavar="FILE",
                   help="print the tables of earlier --json files (together) and exit")
    args = p.parse_args(argv)
    args.services = [s for s in args.services.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [s for s in args.services if s not in LOAD] + [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"unknown services or modes {bad}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = []
        for session, path in enumerate(args.from_json):  # rounds pair within a session
            results += [{**r, "round": (session, r["round"])}
                        for r in json.loads(path.read_text())]
        print("\n".join([*table(results), "", *shares_table(results), "",
                          *map_table(results)]))
        return 0
    os.environ.pop("VIRTUAL_ENV", None)
    starters = {"reference": reference, "fastapi": fastapi,
                "mlserver": lambda: mlserver(args.parallel_workers)}
    results: list[dict[str, Any]] = []
    for service in args.services:
        with starters[service]() as url:
            print(f"{service}: {url}", flush=True)
            for rnd in range(args.rounds):
                order = args.modes[rnd % len(args.modes):] + args.modes[:rnd % len(args.modes)]
                for mode in order:
                    row = {**run_once(url, service, mode, args), "round": rnd}
                    if service == "mlserver":
                        row["service"] = f"mlserver pw{args.parallel_workers}"
                    results.append(row)
                    print(f"  round {rnd + 1} {mode:<11} {row['rps']:7.1f} req/s "
                          f"p99 {row['p99_ms']:8.1f} ms  {row.get('verdict') or ''} "
                          f"other machine share: {row['contention']}", flush=True)
    print("\n".join(["", *table(results), "", *shares_table(results), "",
                      *map_table(results)]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
