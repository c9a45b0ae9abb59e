"""MLServer (Seldon's model server) as a real third-party target for the harness.

What it does, in order:

1. a virtualenv of its own (``.venv-mlserver`` at the repo root by default, reused when
   its install marker matches benchmarks/mlserver/requirements.txt and constraints.txt;
   never the project's ``.venv``) with ``mlserver`` and ``mlserver-sklearn`` from PyPI at
   the pinned versions;
2. a scikit-learn RandomForest trained on a synthetic dataset (benchmarks/mlserver/train.py,
   run with that venv's interpreter, so the joblib pickle matches the sklearn that loads it;
   reused when present): about 3 ms of CPU per batch of 8 rows;
3. MLServer's ``settings.json`` and the model's ``model-settings.json`` (runtime
   ``mlserver_sklearn.SKLearnModel``) in ``--workdir`` (default build/mlserver);
4. ``mlserver start DIR`` in a new session (its own process group) on free ports of
   127.0.0.1 (HTTP, gRPC, metrics), waiting for ``GET /v2/health/ready``; at the end
   SIGTERM to MLServer, then SIGKILL to whatever of its process group is left, and a check
   that nothing of the group survives;
5. with ``--serve-only``: prints the URL and serves until Ctrl-C; otherwise, per
   ``--parallel-workers`` value, with the project's venv:
   ``harness run benchmarks/mlserver/locustfile.py --target URL --users 8 --duration 30s
   --warmup 5s`` (closed model) then ``harness diagnose RUN``, printing both and the run
   directory, and at the end one line per configuration from the run directories.

MLServer's ``parallel_workers`` (server-wide, settings.json; MLServer's default 1): with
N >= 1, the main process (uvicorn + FastAPI for REST, grpc.aio for gRPC, the metrics
server) decodes each request and hands it over multiprocessing queues to one of N
inference worker processes (started with the 'spawn' method, plus multiprocessing's
resource tracker), which run the model; with 0, the model runs inside the main process's
event loop. ``--parallel-workers 0,1,2`` runs one harness run per value, restarting
MLServer in between.

``--tracing-server HOST:PORT`` sets MLServer's ``tracing_server``: it then exports its
OpenTelemetry spans (FastAPI and gRPC instrumentation) to that OTLP/gRPC endpoint.

    .venv/bin/python benchmarks/mlserver_target.py                         # one run, 1 worker
    .venv/bin/python benchmarks/mlserver_target.py --parallel-workers 0,1,2 --profile-wall
    .venv/bin/python benchmarks/mlserver_target.py --serve-only --parallel-workers 2
    .venv/bin/python benchmarks/mlserver_target.py -- --profile-rate 50   # more harness options

Only the standard library is imported here; the harness runs as a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks" / "mlserver"
REQUIREMENTS = HERE / "requirements.txt"
CONSTRAINTS = HERE / "constraints.txt"
LOCUSTFILE = HERE / "locustfile.py"
TRAIN = HERE / "train.py"
DEFAULT_VENV = REPO / ".venv-mlserver"
DEFAULT_WORKDIR = REPO / "build" / "mlserver"
MODEL_NAME = "rf"
MARKER = ".mlserver-target-installed"
_RUN_DIR_LINE = re.compile(r"^run directory: (\S+)\s+\(status: (\w+)\)")


class TargetError(RuntimeError):
    pass


# ---------------------------------------------------------------- virtualenv and model

def _install_digest() -> str:
    h = hashlib.sha256()
    for path in (REQUIREMENTS, CONSTRAINTS):
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_venv(venv: Path, python: str) -> Path:
    """The MLServer virtualenv, created and installed when its marker does not match."""
    venv = venv.resolve()
    if venv == (REPO / ".venv").resolve():
        raise TargetError(f"the MLServer venv must not be the project's .venv (got {venv})")
    marker = venv / MARKER
    digest = _install_digest()
    if (venv / "bin" / "mlserver").exists() and marker.exists() \
            and marker.read_text().strip() == digest:
        print(f"reusing {venv} (mlserver {_pinned('mlserver')})", flush=True)
        return venv
    print(f"creating {venv} and installing {REQUIREMENTS.relative_to(REPO)} "
          f"(about 30-60 s)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                    "-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)], check=True)
    marker.write_text(digest + "\n")
    return venv


def _pinned(name: str) -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        if line.split("==")[0].strip() == name:
            return line.split("==", 1)[1].strip()
    return "?"


def ensure_model(venv: Path, workdir: Path, retrain: bool) -> dict[str, Any]:
    """Train the model into WORKDIR/repo/MODEL_NAME/model.joblib unless it is there."""
    model_dir = workdir / "repo" / MODEL_NAME
    info_path = model_dir / "train.json"
    model = model_dir / "model.joblib"
    if model.exists() and info_path.exists() and not retrain:
        info = json.loads(info_path.read_text())
        venv_sklearn = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sklearn; print(sklearn.__version__)"],
            check=True, capture_output=True, text=True).stdout.strip()
        if info.get("sklearn") == venv_sklearn:
            print(f"reusing the model {_rel(model)}", flush=True)
            return dict(info)
    print("training the model", flush=True)
    out = subprocess.run([str(venv / "bin" / "python"), str(TRAIN), str(model)],
                         check=True, capture_output=True, text=True).stdout
    print(out.strip(), flush=True)
    return dict(json.loads(info_path.read_text()))


# ---------------------------------------------------------------- MLServer

def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports of 127.0.0.1 (held together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_settings(workdir: Path, ports: dict[str, int], parallel_workers: int,
                   tracing_server: str | None) -> Path:
    """settings.json (server) and model-settings.json (the model) in WORKDIR/repo."""
    repo = workdir / "repo"
    settings: dict[str, Any] = {
        # MLServer's default is true: an access-log line per request and debug logging;
        # a production deployment turns it off, so does this benchmark.
        "debug": False,
        "host": "127.0.0.1",
        "http_port": ports["http"],
        "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"],
        # 0: the model runs in the main process; N >= 1: N inference worker processes.
        "parallel_workers": parallel_workers,
        "parallel_workers_timeout": 5,
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
        "load_models_at_startup": True,
    }
    if tracing_server:
        settings["tracing_server"] = tracing_server
    (repo / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (repo / MODEL_NAME / "model-settings.json").write_text(
        json.dumps(model_settings, indent=1) + "\n")
    return repo


@dataclass
class MLServer:
    process: subprocess.Popen[bytes]
    url: str
    ports: dict[str, int]
    log_path: Path
    parallel_workers: int

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the process group is its own pid

    def group(self) -> list[int]:
        """Pids in MLServer's process group (its workers and helpers included)."""
        return _pids_in_group(self.pgid)

    def stop(self, timeout_s: float = 20.0) -> list[int]:
        """SIGTERM MLServer, SIGKILL its group after the timeout; the pids that were left.

        The inference workers and multiprocessing's resource tracker ignore SIGTERM by
        design; MLServer's main process stops them itself when it gets SIGTERM.
        """
        left: list[int] = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5.0
        while self.group() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.group()
        if left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            time.sleep(0.5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)
        return left


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # fields after the command's closing parenthesis: state ppid pgrp ...
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] != b"Z":
            pids.append(int(entry.name))
    return pids


def start_mlserver(venv: Path, workdir: Path, parallel_workers: int,
                   tracing_server: str | None, ready_timeout_s: float = 180.0) -> MLServer:
    ports = dict(zip(("http", "grpc", "metrics"), free_ports(3), strict=True))
    repo = write_settings(workdir, ports, parallel_workers, tracing_server)
    log_path = workdir / f"mlserver-pw{parallel_workers}.log"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(repo)],
                                cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = MLServer(proc, f"http://127.0.0.1:{ports['http']}", ports, log_path,
                      parallel_workers)
    started = time.monotonic()
    try:
        _wait_ready(server, ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    print(f"MLServer ready at {server.url} in {time.monotonic() - started:.1f} s "
          f"(parallel_workers={parallel_workers}, grpc :{ports['grpc']}, "
          f"metrics :{ports['metrics']}, pid {proc.pid}, log {_rel(log_path)})", flush=True)
    return server


def _wait_ready(server: MLServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    ready = server.url + "/v2/health/ready"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise TargetError(f"MLServer exited with code {server.process.returncode} "
                              f"before it was ready; its log:\n{_tail(server.log_path)}")
        try:
            with urllib.request.urlopen(ready, timeout=2.0) as resp:
                if resp.status == 200:
                    # every model loaded (the server-wide readiness says so too)
                    with urllib.request.urlopen(
                            f"{server.url}/v2/models/{MODEL_NAME}/ready", timeout=2.0) as m:
                        if m.status == 200:
                            return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise TargetError(f"MLServer not ready at {ready} after {timeout_s:.0f} s; its log:\n"
                      f"{_tail(server.log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@contextlib.contextmanager
def serving(venv: Path, workdir: Path, parallel_workers: int,
            tracing_server: str | None) -> Iterator[MLServer]:
    server = start_mlserver(venv, workdir, parallel_workers, tracing_server)
    try:
        yield server
    finally:
        left = server.stop()
        survivors = server.group()
        if survivors:
            print(f"WARNING: MLServer processes still alive after SIGKILL: {survivors}",
                  file=sys.stderr, flush=True)
        elif left:
            print(f"MLServer stopped (SIGKILL needed for {left})", flush=True)
        else:
            print(f"MLServer stopped (exit code {server.process.returncode}; "
                  f"no process of its group left)", flush=True)


# ---------------------------------------------------------------- the harness

def _tee(cmd: list[str]) -> tuple[int, list[str]]:
    """Run cmd in the repo, echo its stdout line by line, return (exit code, lines).

    The command runs in a process group of its own, so a Ctrl-C reaches it once, from
    here: on KeyboardInterrupt (Ctrl-C, or SIGTERM/SIGHUP to this script) it gets one
    SIGINT (harness run then stops the load and marks the run directory incomplete) and
    is waited for, then KeyboardInterrupt goes on up so that MLServer is stopped too.
    """
    print("$ " + " ".join(_rel(Path(c)) if c.startswith(str(REPO)) else c for c in cmd),
          flush=True)
    lines: list[str] = []
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                            process_group=0)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
        code = proc.wait()
    except KeyboardInterrupt:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    finally:
        proc.stdout.close()
    return code, lines


def run_harness(harness: Path, server: MLServer, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [str(harness), "run", _rel(LOCUSTFILE), "--target", server.url,
           "--users", str(args.users), "--duration", args.duration, "--warmup", args.warmup,
           "--out", str(args.out), "--tag", "target=mlserver",
           "--tag", f"parallel_workers={server.parallel_workers}"]
    if args.profile_wall:
        cmd.append("--profile-wall")
    cmd += args.harness_args
    code, lines = _tee(cmd)
    run_dir, status = None, None
    for line in lines:
        match = _RUN_DIR_LINE.match(line)
        if match:
            run_dir, status = match.group(1), match.group(2)
    result: dict[str, Any] = {"parallel_workers": server.parallel_workers, "run_exit": code,
                              "run_dir": run_dir, "status": status}
    if run_dir is None:
        print(f"harness run exited {code} and named no run directory", flush=True)
        return result
    dcode, _ = _tee([str(harness), "diagnose", run_dir])
    result["diagnose_exit"] = dcode
    print(f"run directory: {run_dir} (status {status}; harness run exit {code}, "
          f"diagnose exit {dcode})", flush=True)
    result.update(_figures(REPO / run_dir if not Path(run_dir).is_absolute() else Path(run_dir)))
    return result


def _figures(run_dir: Path) -> dict[str, Any]:
    """Throughput, percentiles, the service's CPU per process and the profile's stage
    shares, read from the run directory."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads((run_dir / "summary.json").read_text())
        total = next((r for r in summary.get("requests", []) if r.get("name") == "*"), {})
        client = (total.get("latency") or {}).get("client") or {}
        out["rps"] = (summary.get("load") or {}).get("achieved_rps")
        out["count"] = total.get("count")
        out["fail_pct"] = total.get("fail_pct")
        out["latency_ms"] = {p: client[f"{p}_us"] / 1000 for p in ("p50", "p99", "p999")
                             if isinstance(client.get(f"{p}_us"), (int, float))}
        resources = summary.get("resources") or {}
        out["service_cpu_pct"] = (resources.get("service") or {}).get("cpu_mean_pct")
        out["system_cpu_pct"] = (resources.get("system") or {}).get("cpu_mean_pct")
        window = summary.get("window") or {}
        out["process_cpu_pct"] = _process_cpu(run_dir / "resources.csv", window.get("start"),
                                              window.get("end"))
    with contextlib.suppress(OSError, ValueError):
        stages = json.loads((run_dir / "profile" / "stages.json").read_text())
        oncpu = stages.get("oncpu") or {}
        samples = sum(oncpu.values())
        out["oncpu_shares"] = {k: v / samples for k, v in oncpu.items() if v} if samples else {}
    return out


def _process_cpu(path: Path, start: float | None, end: float | None) -> dict[str, float]:
    """Mean CPU % (of one core) per service process over the measured window, from
    resources.csv: '<role> <pid>' -> %."""
    sums: dict[str, list[float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("role", "").startswith("service"):
                continue
            t = float(row["t"])
            if (start is not None and t < start) or (end is not None and t > end):
                continue
            key = f"{row['role'].removeprefix('service_')} {row['pid']}"
            with contextlib.suppress(ValueError):
                sums.setdefault(key, []).append(float(row["cpu_percent"]))
    return {k: round(sum(v) / len(v), 1) for k, v in sums.items() if v}


def print_table(results: list[dict[str, Any]]) -> None:
    print("\n| parallel_workers | status | requests | req/s | p50 ms | p99 ms | p99.9 ms "
          "| service CPU % (per process) | machine CPU % | on-CPU stages | run directory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = r.get("latency_ms") or {}
        procs = r.get("process_cpu_pct") or {}
        stages = r.get("oncpu_shares") or {}

        def num(v: Any, fmt: str = "{:.1f}") -> str:
            return fmt.format(v) if isinstance(v, (int, float)) else "?"

        cells = [str(r["parallel_workers"]), str(r.get("status")), num(r.get("count"), "{}"),
                 num(r.get("rps")), *(num(lat.get(p), "{:.2f}") for p in ("p50", "p99", "p999")),
                 num(r.get("service_cpu_pct")) + " (" + ", ".join(
                     f"{k}: {v:.0f}" for k, v in procs.items()) + ")",
                 num(r.get("system_cpu_pct")),
                 ", ".join(f"{k} {100 * v:.0f} %" for k, v in stages.items()),
                 str(r.get("run_dir"))]
        print("| " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- main

def _workers_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"parallel workers must be integers separated by commas (got {text!r})") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"parallel workers must be >= 0 (got {text!r})")
    return values


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"tracing server must be HOST:PORT (got {text!r})")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(
        description="Serve a scikit-learn model with MLServer and load it with the harness. "
                    "Arguments after -- go to harness run.")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help="MLServer's own virtualenv (default .venv-mlserver; reused)")
    parser.add_argument("--python", default="python3.11",
                        help="interpreter that creates the MLServer venv")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="model repository, settings and logs (default build/mlserver)")
    parser.add_argument("--retrain", action="store_true", help="train the model again")
    parser.add_argument("--parallel-workers", type=_workers_list, default=[1],
                        metavar="N[,N...]",
                        help="MLServer parallel_workers; a list runs each in turn (default 1)")
    parser.add_argument("--tracing-server", type=_host_port, metavar="HOST:PORT",
                        help="OTLP/gRPC endpoint for MLServer's tracing_server setting")
    parser.add_argument("--serve-only", action="store_true",
                        help="start MLServer, print its URL and serve until Ctrl-C")
    parser.add_argument("--harness", type=Path, default=REPO / ".venv" / "bin" / "harness",
                        help="the harness command (default: the project's .venv)")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--warmup", default="5s")
    parser.add_argument("--profile-wall", action="store_true",
                        help="pass --profile-wall to harness run (on-CPU and wall profiles)")
    parser.add_argument("--out", type=Path, default=Path("runs"),
                        help="where harness run writes run directories (default runs/)")
    args = parser.parse_args(argv)
    args.harness_args = extra
    if args.serve_only and len(args.parallel_workers) != 1:
        parser.error("--serve-only takes one --parallel-workers value")
    return args


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C, and SIGTERM/SIGHUP too, unwind through the finally blocks that stop MLServer
    # (it runs in a session of its own: no signal sent to this script reaches it). SIGINT
    # is set explicitly because a shell that starts a job in the background ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    workdir = args.workdir.resolve()
    (workdir / "repo" / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    try:
        venv = ensure_venv(args.venv, args.python)
        ensure_model(venv, workdir, args.retrain)
        if args.serve_only:
            with serving(venv, workdir, args.parallel_workers[0], args.tracing_server) as srv:
                print(f"\nMLServer serves model '{MODEL_NAME}' at {srv.url}  "
                      f"(POST {srv.url}/v2/models/{MODEL_NAME}/infer)\n"
                      f"  .venv/bin/harness run {_rel(LOCUSTFILE)} --target {srv.url} "
                      f"--users 8 --duration 30s --warmup 5s\n"
                      "Ctrl-C stops it.", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while srv.process.poll() is None:
                        time.sleep(0.5)
                if srv.process.poll() is not None:
                    print(f"MLServer exited with code {srv.process.returncode}; "
                          f"its log:\n{_tail(srv.log_path)}", file=sys.stderr)
                    return 1
            return 0
        if not args.harness.exists():
            raise TargetError(f"the harness is not installed at {args.harness}: run "
                              "`make venv` (or pass --harness)")
        results = []
        for workers in args.parallel_workers:
            print(f"\n=== MLServer parallel_workers={workers} ===", flush=True)
            with serving(venv, workdir, workers, args.tracing_server) as srv:
                results.append(run_harness(args.harness, srv, args))
        print_table(results)
        return 0 if all(r.get("run_exit") == 0 for r in results) else 1
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
