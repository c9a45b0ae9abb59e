"""The localization fault matrix on a service the project did not instrument: the FastAPI
example (examples/fastapi_service: no Server-Timing), judged with three kinds of evidence.

    .venv/bin/python benchmarks/fault_matrix_fastapi.py --rounds 3 --duration 8 --warmup 2 \\
        [--modes a,b,c] [--cases slow_store,blocking] [--json out.json] [--out DIR]
    .venv/bin/python benchmarks/fault_matrix_fastapi.py --rejudge DIR   # same runs, current rules

Modes: (a) profile + resources (``--profile-wall``, py-spy and psutil on the service);
(b) the same plus traces (the service started with ``--otel`` exporting OTLP/gRPC to the
run's receiver: ``harness run --traces --traces-listen 127.0.0.1:PORT`` and
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT``); (c) client latency only
(``--no-profile``: client histograms and psutil, no stages, no profile).

Each round, per mode: a clean service (2 uvicorn workers, Redis) run twice (the A/A pair),
then one fresh service per fault, each loaded with the service's own locustfile in the open
model, and ``diagnose(fault, baseline=clean)``. The answer is the primary finding (the first
outside the measurement layer that is not a record), reduced to a cause (``cause_of``). In
(a) and (b) it must be the injected cause; the A/A pair must have no finding above info
outside the measurement layer; in (c) the answer must not name a *wrong* cause (naming none,
or only "more CPU per request" / "waiting", is right: the evidence cannot say more).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.diagnosis.engine import Diagnosis, diagnose  # noqa: E402
from harness.analysis.diagnosis.facts import Finding, stage_layer  # noqa: E402
from harness.rundir import RunDir  # noqa: E402

PY = sys.executable
LOCUSTFILE = ROOT / "examples" / "fastapi_service" / "locustfile.py"
MODES = {"a": "profile + resources", "b": "profile + resources + traces",
         "c": "client latency only (--no-profile)"}
#: answers that localize nothing: right in (c) whatever was injected
NOT_LOCALIZED = {"nothing", "shift", "cpu", "waiting", "tail", "machine"}


@dataclass(frozen=True)
class Case:
    """One row: the service's faults and workers, and the cause the diagnosis must name."""

    name: str
    expect: str  # a cause_of() value, or "none" (the A/A pair)
    faults: dict[str, Any] | None = None
    workers: int = 2
    # the rate is raised to this multiple of one worker's capacity (from the baseline's CPU
    # time per request), so "too few workers" holds on a quiet and on a busy machine
    overload: float | None = None


CASES: dict[str, Case] = {c.name: c for c in (
    Case("clean_aa", "none"),
    Case("slow_store", "upstream", {"store_delay_ms": 20}),
    Case("model_v2", "model", {"default_version": "v2"}),
    Case("slow_serialization", "serialization",
         {"response_pad_floats": 4000, "python_encoder": True}),
    Case("blocking_call", "event loop", {"blocking_ms": 30}),
    # 2x: the capacity is estimated from the baseline's CPU per request at 40 req/s, which
    # holds per-request costs that amortize at high rates (2.96 ms there, 1.91 ms at 514
    # req/s on the one worker): at 1.3x the worker was 80 % busy, not overloaded
    Case("too_few_workers", "queueing", workers=1, overload=2.0),
    Case("feature_null", "input data", {"null_feature": "prep_minutes_p90_7d",
                                        "null_fraction": 0.5}),
)}
CHEAP = ("clean_aa", "blocking_call")
PROFILE_RATE: int | None = None  # --profile-rate


def cause_of(f: Finding | None) -> str:
    """The cause a finding names, in the matrix's words."""
    if f is None:
        return "nothing"
    data, rule = f.data or {}, (f.data or {}).get("rule")
    if rule == "event_loop_blocked":
        return "event loop"
    if rule in ("cpu_saturation", "saturation", "queueing"):
        return "queueing"
    if rule == "own_code":
        return "own code"
    if rule == "client_tail":
        cause = data.get("cause")
        return {"unknown": "tail", "class": "input data" if f.layer == "input data"
                else "tail"}.get(cause, cause or "tail")
    if f.layer == "change":
        if data.get("input_class"):
            return "input data"
        stage = data.get("stage")
        if stage == "residual":
            return "queueing"
        if stage:
            return stage_layer(stage.partition(":")[2])
        return {"cpu": "cpu", "awaiting": "waiting"}.get(data.get("via") or "", "shift")
    if "requests failed" in f.title:
        return "queueing" if data.get("saturated") else "errors"
    if f.layer == "infrastructure" and "machine" in f.title:
        return "machine"
    return f.layer


def alarms(d: Diagnosis) -> list[Finding]:
    """Findings above info outside the measurement layer (what an A/A pair must not have)."""
    return [f for f in d.findings if f.severity != "info" and f.layer != "measurement"]


def judge(case: Case, mode: str, d: Diagnosis) -> tuple[str, bool]:
    """(the answer, whether it is right for the case in that mode)."""
    if case.expect == "none":
        found = alarms(d)
        return (f"{found[0].severity}: {cause_of(found[0])}" if found else "no alarm",
                not found)
    answer = cause_of(d.primary)
    if mode == "c":
        return answer, answer == case.expect or answer in NOT_LOCALIZED
    return answer, answer == case.expect


def _free_port(pair: bool = False) -> int:
    """A free port of 127.0.0.1; with ``pair`` one whose next port is free too (the traces
    receiver listens on PORT for OTLP/gRPC and PORT + 1 for OTLP/HTTP)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if not pair:
                return port
            with socket.socket() as nxt:
                try:
                    nxt.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no pair of free ports on 127.0.0.1")


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_service(case: Case, workdir: Path, otel_port: int | None,
                  artifacts: Path | None = None) -> Service:
    """The FastAPI example with the case's faults, ready (its launcher's ready line)."""
    port = _free_port()
    argv = [PY, "-m", "examples.fastapi_service.serve", "--port", str(port),
            "--workers", str(case.workers)]
    if artifacts is not None:
        argv += ["--artifacts", str(artifacts)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FASTSVC_", "OTEL_", "PROMETHEUS_MULTIPROC"))}
    if case.faults:
        path = workdir / f"faults-{case.name}.json"
        path.write_text(json.dumps(case.faults))
        argv += ["--faults", str(path)]
    if otel_port is not None:
        argv.append("--otel")
        env.update(OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_TIMEOUT="2",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otel_port}",
                   OTEL_BSP_SCHEDULE_DELAY="500")
    log = workdir / f"service-{case.name}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    svc = Service(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 120
    while "fastsvc: ready at" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            svc.stop()
            raise RuntimeError(f"{case.name}: the service did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return svc


def _run_once(out: Path, case: Case, mode: str, *, rate: float, duration: float,
              warmup: float, seed: int, workdir: Path, artifacts: Path | None) -> Path:
    otel_port = _free_port(pair=True) if mode == "b" else None
    svc = start_service(case, workdir, otel_port, artifacts)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [PY, "-m", "harness.cli", "run", str(LOCUSTFILE), "--target", svc.url,
           "--rate", f"{rate:g}", "--duration", f"{duration:g}s", "--warmup", f"{warmup:g}s",
           "--seed", str(seed), "--out", str(out), "--stage-map", "python_web"]
    cmd += ["--no-profile"] if mode == "c" else ["--profile-wall"]
    if mode != "c" and PROFILE_RATE is not None:
        cmd += ["--profile-rate", str(PROFILE_RATE)]
    if otel_port is not None:
        cmd += ["--traces", "--traces-listen", f"127.0.0.1:{otel_port}", "--traces-grace", "5s"]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=warmup + duration + 180)
    finally:
        svc.stop()
    dirs = [p for p in out.iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"harness run for {case.name} ({mode}) left {len(dirs)} run "
                           f"directories (exit {done.returncode}): {done.stderr[-2000:]}")
    return dirs[0]


def harness_run(out: Path, case: Case, mode: str, *, rate: float, duration: float,
                warmup: float, seed: int, workdir: Path, artifacts: Path | None = None) -> Path:
    """Start the case's service, load it with `harness run --target` in the mode, stop it;
    returns the run directory. A (b) run whose traces receiver could not listen (a port
    taken between the check and the bind) is not a (b) run: it is run once more."""
    for attempt in (1, 2):
        run = _run_once(out, case, mode, rate=rate, duration=duration, warmup=warmup,
                        seed=seed, workdir=workdir, artifacts=artifacts)
        if mode != "b" or (run / "traces" / "status.json").is_file():
            return run
        shutil.move(str(run), str(workdir / f"failed-traces-{case.name}-{attempt}"))
    raise RuntimeError(f"{case.name} (b): the traces collector did not run twice")


def one_worker_capacity_rps(run: Path) -> float:
    """1 / the service's CPU time per request (psutil, from the baseline): what one worker
    serves at most on a full core."""
    from harness.analysis.diagnosis.facts import extract_facts
    from harness.analysis.diagnosis.measures import cpu_per_request_ms

    cpu_ms = cpu_per_request_ms(extract_facts(RunDir(run)))
    if not cpu_ms:
        raise RuntimeError(f"run {run} has no service CPU per request (resources collector)")
    return 1000.0 / cpu_ms


@dataclass
class Outcome:
    case: str
    mode: str
    round: int
    answer: str
    correct: bool
    primary: str | None
    run: str
    baseline: str
    extra: dict[str, Any] = field(default_factory=dict)


def _outcome(case: Case, mode: str, index: int, run: Path, base: Path,
             extra: dict[str, Any] | None = None) -> Outcome:
    d = diagnose(RunDir(run), RunDir(base))
    answer, ok = judge(case, mode, d)
    p = d.primary
    return Outcome(case.name, mode, index, answer, ok,
                   f"{p.severity} [{p.layer}] {p.title}" if p else None, str(run), str(base),
                   extra or {})


def run_round(cases: list[Case], modes: list[str], out: Path, index: int, *, rate: float,
              duration: float, warmup: float, log: Any = print,
              artifacts: Path | None = None) -> list[Outcome]:
    """One round: per mode, the clean baseline, then each case against it."""
    workdir = out / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for mode in modes:
        kw = {"duration": duration, "warmup": warmup, "seed": 1 + index, "workdir": workdir,
              "artifacts": artifacts}
        base = harness_run(out / mode / "clean", Case("clean", "none"), mode, rate=rate, **kw)
        for case in cases:
            t0 = time.monotonic()
            case_rate = rate if case.overload is None else max(
                rate, case.overload * one_worker_capacity_rps(base))
            run = harness_run(out / mode / case.name, case, mode, rate=case_rate, **kw)
            outcomes.append(_outcome(case, mode, index, run, base, {"rate": round(case_rate)}))
            o = outcomes[-1]
            log(f"round {index} ({mode}): {case.name:18s} -> {o.answer:16s} "
                f"{'ok' if o.correct else 'WRONG'}  ({time.monotonic() - t0:.0f} s; "
                f"primary: {o.primary})")
    return outcomes


def rejudge(out: Path) -> list[Outcome]:
    """Diagnose the run directories of an earlier invocation again, with the current rules."""
    outcomes = []
    for index, rnd in enumerate(sorted(out.glob("round*"))):
        for mode in MODES:
            bases = sorted(p for p in (rnd / mode / "clean").glob("*") if p.is_dir())
            for case in CASES.values():
                runs = sorted(p for p in (rnd / mode / case.name).glob("*") if p.is_dir())
                if runs and bases:
                    outcomes.append(_outcome(case, mode, index, runs[0], bases[0]))
    return outcomes


def format_matrix(outcomes: list[Outcome]) -> list[str]:
    """A markdown table: case -> expected -> per mode, the answers over the rounds."""
    modes = [m for m in MODES if any(o.mode == m for o in outcomes)]
    lines = ["| case | expected | " + " | ".join(f"({m}) {MODES[m]}" for m in modes) + " |",
             "|---|---|" + "---|" * len(modes)]
    for name in dict.fromkeys(o.case for o in outcomes):
        cells = []
        for m in modes:
            rows = [o for o in outcomes if o.case == name and o.mode == m]
            cells.append(", ".join(o.answer for o in rows)
                         + f" ({sum(o.correct for o in rows)}/{len(rows)})" if rows else "-")
        lines.append(f"| {name} | {CASES[name].expect} | " + " | ".join(cells) + " |")
    for m in modes:
        faults = [o for o in outcomes if o.mode == m and CASES[o.case].expect != "none"]
        aa = [o for o in outcomes if o.mode == m and CASES[o.case].expect == "none"]
        lines.append(f"\n({m}): faults {'judged right' if m == 'c' else 'localized'} "
                     f"{sum(o.correct for o in faults)}/{len(faults)}; A/A without false "
                     f"alarm {sum(o.correct for o in aa)}/{len(aa)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=40.0, help="open-model rate, req/s")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--modes", default="a,b,c", help="comma-separated, of: a, b, c")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, of: {', '.join(CASES)} (or 'cheap')")
    ap.add_argument("--profile-rate", type=int, default=None,
                    help="py-spy samples per second in (a) and (b) (default: the harness's, "
                         "20 Hz: an 8 s run at 40 req/s then has ~15 on-CPU samples)")
    ap.add_argument("--out", type=Path, default=None, help="where run directories go")
    ap.add_argument("--json", type=Path, default=None, help="write the outcomes here")
    ap.add_argument("--rejudge", type=Path, default=None,
                    help="diagnose the rounds of an earlier --out directory again, no runs")
    args = ap.parse_args(argv)
    global PROFILE_RATE
    PROFILE_RATE = args.profile_rate
    if args.rejudge:
        outcomes = rejudge(args.rejudge)
        print("\n".join(format_matrix(outcomes)) if outcomes else "no runs found")
        if args.json:
            args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
        return 0 if outcomes else 1
    names = list(CHEAP) if args.cases == "cheap" else [n.strip() for n in args.cases.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [n for n in names if n not in CASES] + [m for m in modes if m not in MODES]
    if unknown or args.rounds < 1:
        ap.error(f"unknown cases or modes {unknown} (cases: {list(CASES)}; modes: a, b, c)"
                 if unknown else f"--rounds must be >= 1 (got {args.rounds})")
    out = args.out or Path(tempfile.mkdtemp(prefix="faultmatrix-fastapi-"))
    started, outcomes = time.time(), []
    for r in range(args.rounds):
        outcomes += run_round([CASES[n] for n in names], modes, out / f"round{r}", r,
                              rate=args.rate, duration=args.duration, warmup=args.warmup,
                              log=lambda s: print(s, file=sys.stderr, flush=True))
    print("\n".join(format_matrix(outcomes)))
    print(f"\n{args.rounds} rounds, {args.duration:g} s measured + {args.warmup:g} s warm-up "
          f"per run at {args.rate:g} req/s; wall time {time.time() - started:.0f} s; load "
          f"average at the end {os.getloadavg()[0]:.1f}; runs in {out}")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
