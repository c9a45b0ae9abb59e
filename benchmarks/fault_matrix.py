"""The localization fault matrix: does `harness diagnose --baseline` name the injected cause?

    .venv/bin/python benchmarks/fault_matrix.py --rounds 3 --duration 8 --warmup 2 \\
        [--cases store_fixed,serialize_bloat] [--json results.json] [--out DIR]
    .venv/bin/python benchmarks/fault_matrix.py --rejudge DIR   # same runs, current rules

Each round runs the production scenario against the reference service (``harness run
--serve reference``, a fresh service per run) once clean, once clean again (the A/A
pair) and once per injected fault, then diagnoses every fault run against the round's
clean run with ``harness.analysis.diagnosis.diagnose``. The answer to "where did the time go" is
the diagnosis' primary finding (the first outside the measurement layer); it is reduced
to a cause (``cause_of``) and compared with the cause each case injects. The table
reports, per case, the answers over the rounds and how many were right.

Two cases are judged differently because their cause is not a service stage:
``cpu_contention`` (a CPU burner per core during the run) is right when the machine
finding is present and no service stage is blamed at warning level or above; the A/A
case is right when no finding outside the measurement layer is above info.
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
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.diagnosis.engine import Diagnosis, diagnose  # noqa: E402
from harness.analysis.diagnosis.facts import Finding, stage_layer  # noqa: E402
from harness.rundir import RunDir  # noqa: E402

PY = sys.executable
PRODUCTION = ROOT / "scenarios" / "production.py"
OOD = ROOT / "scenarios" / "ood.py"


@dataclass(frozen=True)
class Case:
    """One row of the matrix: what is injected and which cause the diagnosis must name."""

    name: str
    expect: str  # a cause_of() value, or "machine" / "none" (judged specially)
    faults: dict[str, Any] | None = None
    scenario: Path = PRODUCTION
    baseline: str = "clean"
    args: tuple[str, ...] = ()
    locust_args: tuple[str, ...] = ()
    burner: bool = False
    # the rate is raised to this multiple of one worker's capacity (from the baseline's
    # CPU time per request), so "too few workers" holds on a quiet and on a busy machine
    overload: float | None = None
    note: str = ""


OOD_ARGS = ("--ood-shares", "extreme_values=0.4")
CASES: dict[str, Case] = {c.name: c for c in (
    Case("clean_aa", "none"),
    Case("store_fixed", "upstream", {"store_latency": {"ms": 20, "distribution": "fixed"}}),
    Case("store_tail", "upstream",
         {"store_latency": {"ms": 4, "distribution": "lognormal", "sigma": 1.2}}),
    Case("store_errors", "errors", {"store_errors": {"rate": 0.1}}),
    Case("feature_null", "input data", {"feature_null": {"features": ["credit_score"]}},
         note="no latency effect; diagnose sees no service counters"),
    Case("inference_cpu", "model", {"inference_cpu": {"ms": 8}}),
    Case("model_v2", "model", args=("--model-version", "fraud=v2")),
    Case("serialize_bloat", "serialization", {"serialize_bloat": {"kb": 1024}}),
    Case("too_few_workers", "queueing", args=("--service-workers", "1"), overload=1.3),
    Case("cpu_contention", "machine", burner=True),
    Case("ood_slow_path", "input data",
         {"inference_scaling": {"per_row_ms": 0.0, "out_of_range_ms": 2}},
         scenario=OOD, baseline="ood_clean", locust_args=OOD_ARGS),
)}
CHEAP = ("store_fixed", "store_errors")


def cause_of(f: Finding | None) -> str:
    """The cause a finding names, in the words of the matrix (layer, or a named infra cause)."""
    if f is None:
        return "nothing"
    data = f.data or {}
    if f.layer == "change":
        if data.get("input_class"):
            return "input data"
        stage = data.get("stage")
        if stage == "residual":
            return "queueing"
        return stage_layer(stage.partition(":")[2]) if stage else "shift"
    if f.layer in ("upstream", "model", "serialization", "input data"):
        return f.layer
    if f.layer == "infrastructure":
        if "too few workers" in f.title or f.title.startswith("queueing"):
            return "queueing"
        if "requests failed" in f.title:
            return "errors"
        if "machine" in f.title:
            return "machine"
        return "infrastructure"
    if "other processes" in f.title:
        return "machine"
    return "measurement"


def alarms(d: Diagnosis) -> list[Finding]:
    """Findings above info outside the measurement layer (what an A/A pair must not have)."""
    return [f for f in d.findings if f.severity != "info" and f.layer != "measurement"]


def judge(case: Case, d: Diagnosis) -> tuple[str, bool]:
    """(the answer, whether it names the injected cause)."""
    if case.expect == "none":
        found = alarms(d)
        return (f"{found[0].severity}: {cause_of(found[0])}" if found else "no alarm",
                not found)
    if case.expect == "machine":
        machine = [f for f in d.findings if cause_of(f) == "machine"]
        blamed = [f for f in alarms(d) if cause_of(f) not in ("machine", "queueing")]
        answer = "machine" if machine else cause_of(d.primary)
        if blamed:
            answer += f" + {blamed[0].severity}: {cause_of(blamed[0])}"
        return answer, bool(machine) and not blamed
    answer = cause_of(d.primary)
    return answer, answer == case.expect


@dataclass(frozen=True)
class SharedService:
    """A running reference service with its admin endpoint on (REFSVC_ADMIN_TOKEN): cases
    that only inject faults reuse it, switching faults between runs, instead of starting
    a service per run."""

    url: str
    token: str

    def set_faults(self, faults: dict[str, Any] | None) -> None:
        req = urllib.request.Request(
            f"{self.url}/admin/faults", data=json.dumps(faults or {}).encode(),
            method="PUT" if faults else "DELETE",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"admin endpoint answered {resp.status} for {faults!r}")


def harness_run(out: Path, case: Case, *, rate: float, duration: float, warmup: float,
                seed: int, faults_dir: Path, shared: SharedService | None = None) -> Path:
    """One `harness run --serve reference` (or `--target` on a shared service); returns its
    run directory."""
    out.mkdir(parents=True, exist_ok=True)
    use_shared = shared is not None and not case.args and not case.burner
    target = ["--target", shared.url] if use_shared and shared else ["--serve", "reference"]
    cmd = [PY, "-m", "harness.cli", "run", str(case.scenario), *target,
           "--rate", f"{rate:g}", "--duration", f"{duration:g}s", "--warmup", f"{warmup:g}s",
           "--seed", str(seed), "--out", str(out), *case.args]
    if use_shared and shared:
        shared.set_faults(case.faults)
    elif case.faults:
        path = faults_dir / f"{case.name}.json"
        path.write_text(json.dumps(case.faults))
        cmd += ["--faults", str(path)]
    if case.locust_args:
        cmd += ["--", *case.locust_args]
    burners = [subprocess.Popen([PY, "-c", "while True: pass"])
               for _ in range(os.cpu_count() or 1)] if case.burner else []
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=warmup + duration + 120)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    dirs = [p for p in out.iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"harness run for {case.name} left {len(dirs)} run directories "
                           f"(exit {done.returncode}): {done.stderr[-2000:]}")
    return dirs[0]


def one_worker_capacity_rps(run: Path) -> float:
    """What one sync worker can serve at most: 1 / the service's CPU time per request
    (psutil, from the baseline). CPU time, not wall time: a contended machine inflates the
    wall time of the baseline, and a rate derived from it may not load a quieter run."""
    from harness.analysis.diagnosis.change import cpu_per_request_ms
    from harness.analysis.diagnosis.facts import extract_facts

    cpu_ms = cpu_per_request_ms(extract_facts(RunDir(run)))
    if not cpu_ms:
        raise RuntimeError(f"run {run} has no service CPU per request (resources collector)")
    return 1000.0 / cpu_ms


@dataclass
class Outcome:
    case: str
    round: int
    answer: str
    correct: bool
    primary: str | None
    run: str
    baseline: str
    extra: dict[str, Any] = field(default_factory=dict)


def run_round(cases: list[Case], out: Path, index: int, *, rate: float, duration: float,
              warmup: float, log: Callable[[str], None] = lambda s: None,
              shared: SharedService | None = None) -> list[Outcome]:
    """One round: the baselines the cases need, then each case against its baseline."""
    faults_dir = out / "faults"
    faults_dir.mkdir(parents=True, exist_ok=True)
    seed = 1 + index
    base_cases = {"clean": Case("clean", "none"),
                  "ood_clean": Case("ood_clean", "none", scenario=OOD, locust_args=OOD_ARGS)}
    bases: dict[str, Path] = {}
    for name in dict.fromkeys(c.baseline for c in cases):
        log(f"round {index}: baseline {name}")
        bases[name] = harness_run(out / name, base_cases[name], rate=rate, duration=duration,
                                  warmup=warmup, seed=seed, faults_dir=faults_dir,
                                  shared=shared)
    outcomes = []
    for case in cases:
        base = bases[case.baseline]
        case_rate = rate
        if case.overload is not None:
            case_rate = max(rate, case.overload * one_worker_capacity_rps(base))
        t0 = time.monotonic()
        run = harness_run(out / case.name, case, rate=case_rate, duration=duration,
                          warmup=warmup, seed=seed, faults_dir=faults_dir, shared=shared)
        d = diagnose(RunDir(run), RunDir(base))
        answer, ok = judge(case, d)
        p = d.primary
        outcomes.append(Outcome(case.name, index, answer, ok,
                                f"{p.severity} [{p.layer}] {p.title}" if p else None,
                                str(run), str(base), {"rate": round(case_rate, 1)}))
        log(f"round {index}: {case.name:16s} -> {answer:24s} {'ok' if ok else 'WRONG'}  "
            f"({time.monotonic() - t0:.0f} s; primary: {outcomes[-1].primary})")
    return outcomes


def rejudge(out: Path) -> list[Outcome]:
    """Diagnose the run directories of an earlier invocation again (the rules are pure
    functions of the run directory, so a rule change can be checked on the same runs)."""
    outcomes = []
    for index, rnd in enumerate(sorted(out.glob("round*"))):
        for case in CASES.values():
            runs = sorted(p for p in (rnd / case.name).glob("*") if p.is_dir())
            bases = sorted(p for p in (rnd / case.baseline).glob("*") if p.is_dir())
            if not runs or not bases:
                continue
            d = diagnose(RunDir(runs[0]), RunDir(bases[0]))
            answer, ok = judge(case, d)
            p = d.primary
            outcomes.append(Outcome(case.name, index, answer, ok,
                                    f"{p.severity} [{p.layer}] {p.title}" if p else None,
                                    str(runs[0]), str(bases[0])))
    return outcomes


def format_matrix(outcomes: list[Outcome]) -> list[str]:
    """A markdown table: case -> expected -> answers over the rounds -> correct share."""
    lines = ["| fault | expected cause | answers (per round) | correct |",
             "|---|---|---|---:|"]
    for name in dict.fromkeys(o.case for o in outcomes):
        rows = [o for o in outcomes if o.case == name]
        answers = ", ".join(o.answer for o in rows)
        lines.append(f"| {name} | {CASES[name].expect} | {answers} | "
                     f"{sum(o.correct for o in rows)}/{len(rows)} |")
    faults = [o for o in outcomes if CASES[o.case].expect != "none"]
    aa = [o for o in outcomes if CASES[o.case].expect == "none"]
    if faults:
        lines.append(f"\nfaults localized: {sum(o.correct for o in faults)}/{len(faults)} "
                     f"({100 * statistics.mean(o.correct for o in faults):.0f} %)")
    if aa:
        lines.append(f"A/A without false alarm: {sum(o.correct for o in aa)}/{len(aa)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=20.0, help="open-model rate, req/s")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, of: {', '.join(CASES)} (or 'cheap')")
    ap.add_argument("--out", type=Path, default=None, help="where run directories go")
    ap.add_argument("--json", type=Path, default=None, help="write the outcomes here")
    ap.add_argument("--rejudge", type=Path, default=None,
                    help="diagnose the rounds of an earlier --out directory again, no runs")
    args = ap.parse_args(argv)
    if args.rejudge:
        outcomes = rejudge(args.rejudge)
        print("\n".join(format_matrix(outcomes)) if outcomes else "no runs found")
        return 0 if outcomes else 1
    names = list(CHEAP) if args.cases == "cheap" else [n.strip() for n in args.cases.split(",")]
    unknown = [n for n in names if n not in CASES]
    if unknown or args.rounds < 1:
        ap.error(f"unknown cases {unknown} (known: {list(CASES)})" if unknown
                 else f"--rounds must be >= 1 (got {args.rounds})")
    out = args.out or Path(tempfile.mkdtemp(prefix="faultmatrix-"))
    started = time.time()
    outcomes: list[Outcome] = []
    for r in range(args.rounds):
        outcomes += run_round([CASES[n] for n in names], out / f"round{r}", r, rate=args.rate,
                              duration=args.duration, warmup=args.warmup,
                              log=lambda s: print(s, file=sys.stderr, flush=True))
    print("\n".join(format_matrix(outcomes)))
    print(f"\n{args.rounds} rounds, {args.duration:g} s measured + {args.warmup:g} s warm-up "
          f"per run at {args.rate:g} req/s; wall time {time.time() - started:.0f} s; "
          f"load average at the end {os.getloadavg()[0]:.1f}; runs in {out}")
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
