"""Calibration of comparisons across separate runs (`harness ab`, `harness compare`, issue 17).

    .venv/bin/python benchmarks/compare_calibration.py --out DIR [--rounds 10]   # collect + judge
    .venv/bin/python benchmarks/compare_calibration.py --rejudge DIR              # judge again

Real 20 s production runs against the reference service, as a user makes them
(`harness run scenarios/production.py --serve reference --rate 30 --duration 20s
--warmup 5s`, a fresh service per run, profiler on). Each round makes three `harness ab`
sessions (harness.run.ab.run_ab), one after the other:

- ``aa1``: one A/A pair, back to back (K = 1);
- ``ab3``: A B A B A B with a CPU fault on one model in B: ``inference_cpu`` sized to slow
  fraud's ``infer`` stage by 15 % (``SLOWDOWN / EFFECT_PER_CPU`` of fraud v1's inference CPU
  time per request, measured in-process at the start; both stored);
- ``aa3``: A B A B A B with nothing changed (K = 3 A/A).

Judged (see ``calibration_judge.py``): false alarms on A/A and detection on A/B, for one
run per side (aa1 pairs and the adjacent pairs of aa3 / ab3 sessions) and K = 3, with the
host's noise calibration taken from the *other* rounds' A/A pairs (leave one round out),
and CI coverage. Everything is stored in DIR (``calibration.json``, one directory per
round), so an interrupted benchmark resumes with the same command, and ``--rejudge``
recomputes the table from the runs with the current statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCENARIO = ROOT / "scenarios" / "production.py"
#: the bar's slowdown of fraud's ``infer`` stage (issue 17: "+15 % inference slowdown")
SLOWDOWN = 0.15
#: the infer p50's measured change per unit of fault, as a fraction of fraud's bare
#: inference CPU: a fault of 15 % of that CPU moved the stage's p50 by +10.7 % (calibQ) and
#: +8.7 % (calibP), 0.71 and 0.58 of it (the stage's wall time holds more than the model's
#: CPU: the worker's share of a busy core, the profiler's samples). The fault is sized with
#: their mean so that its effect is the bar's +15 %; the judge prints the measured effect.
EFFECT_PER_CPU = 0.65
FAULT_MODEL = "fraud"
#: models the fault does not touch: the K = 3 sessions are also judged with each set as the
#: controls (``harness compare --control NAME [--control NAME]``): churn alone (the model
#: with the fewest requests per run, the noisiest divisor) and churn with ranking
CONTROLS = ("POST predict churn", "POST predict churn,POST predict ranking")
SESSIONS = ("aa1", "ab3", "aa3")

_CPU_PROBE = """
import json, statistics, time, numpy as np
from pathlib import Path
from reference_service.inference import load_models
d = Path('artifacts'); models = load_models(d, json.loads((d / 'manifest.json').read_text()))
m = models[('fraud', 'v1')]; X = np.zeros((1, len(m.features)))
for _ in range(100): m.predict_proba(X)
meds = []
for _ in range(7):
    ts = []
    for _ in range(300):
        t = time.thread_time(); m.predict_proba(X); ts.append(time.thread_time() - t)
    meds.append(statistics.median(ts))
print(json.dumps({"median_ms": statistics.median(meds) * 1e3, "min_ms": min(meds) * 1e3}))
"""


def infer_cpu_ms() -> dict[str, float]:
    """fraud v1's inference CPU time for one row (the median request), as the service runs
    it (one OpenMP thread): thread CPU time, immune to other processes' load."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CPU_PROBE], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def _options(args: argparse.Namespace, faults: Path | None, out: Path):  # noqa: ANN202
    from harness.run import RunOptions
    from harness.run.target import ServeOptions

    return RunOptions(scenario=SCENARIO, serve="reference",
                      serve_options=ServeOptions(faults=str(faults) if faults else None),
                      rate=args.rate, duration_s=args.duration, warmup_s=args.warmup, out=out,
                      command_line=("benchmarks/compare_calibration.py",))


def run_session(args: argparse.Namespace, state: dict, rnd: int, kind: str, out: Path) -> None:
    from harness.run.ab import AbOptions, run_ab

    key = f"{rnd:02d}-{kind}"
    done = state["sessions"].get(key)
    if done and done.get("state") == "done":
        return
    fault = out / "fault.yaml" if kind == "ab3" else None
    rdir = out / f"round-{rnd:02d}"
    opts = AbOptions(a=_options(args, None, rdir), b=_options(args, fault, rdir),
                     runs=1 if kind == "aa1" else 3, out=rdir,
                     labels=("clean", "fraud infer +15 %" if fault else "clean"))
    t0 = time.time()
    resume = Path(done["path"]) if done and done.get("path") else None
    if resume is None:
        # Record the directory before the first run, so a resumed benchmark finishes it.
        from harness.run.ab import session_dir

        resume = session_dir(rdir, f"{kind}")
        state["sessions"][key] = {"path": str(resume), "state": "running"}
        _save(out, state)
        from harness.run.ab.model import AbSession
        from harness.rundir import write_json_atomic

        write_json_atomic(resume / "ab.json", AbSession(
            path=resume, runs_per_side=opts.runs, labels=opts.labels,
            created=time.time()).to_dict())
    session = run_ab(opts, resume=resume,
                     on_run=lambda r, s: print(f"  {key} {r.side}{r.round} {r.status} "
                                               f"({r.elapsed_s:.0f} s)", file=sys.stderr,
                                               flush=True))
    state["sessions"][key] = {"path": str(session.path), "state": session.state,
                              "wall_s": round(time.time() - t0, 1),
                              "loadavg": os.getloadavg()[0]}
    _save(out, state)


def _save(out: Path, state: dict) -> None:
    from harness.rundir import write_json_atomic

    write_json_atomic(out / "calibration.json", state)


def collect(args: argparse.Namespace) -> Path:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "calibration.json"
    if path.exists():
        state = json.loads(path.read_text())
    else:
        cpu = infer_cpu_ms()
        ms = round(SLOWDOWN / EFFECT_PER_CPU * cpu["median_ms"], 3)
        state = {"rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
                 "rounds": args.rounds, "slowdown": SLOWDOWN, "effect_per_cpu": EFFECT_PER_CPU,
                 "fault_model": FAULT_MODEL,
                 "infer_cpu": cpu, "fault_ms": ms, "started": time.time(), "sessions": {}}
        (out / "fault.yaml").write_text(
            f"inference_cpu: {{ms: {ms}, models: [{FAULT_MODEL}]}}\n")
        _save(out, state)
    state["rounds"] = max(int(state.get("rounds", 0)), args.rounds)
    args.rate, args.duration, args.warmup = state["rate"], state["duration_s"], state["warmup_s"]
    for rnd in range(1, state["rounds"] + 1):
        for kind in SESSIONS:
            print(f"round {rnd} {kind} (load average {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
            run_session(args, state, rnd, kind, out)
    state["finished"] = time.time()
    _save(out, state)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="where the runs go (resumes what is there)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--rejudge", type=Path, help="judge the runs in DIR again; run nothing")
    ap.add_argument("--collect-only", action="store_true", help="make the runs, judge nothing")
    ap.add_argument("--json", type=Path, help="write the judged rows here")
    ap.add_argument("--control", action="append", metavar="NAME[,NAME]",
                    help="also judge the K = 3 sessions divided by these request names, ones "
                         "the fault does not touch; repeat for several sets (default "
                         f"{' and '.join(map(repr, CONTROLS))}; '' for none)")
    args = ap.parse_args(argv)
    if args.rejudge is None and args.out is None:
        ap.error("give --out DIR (new or to resume) or --rejudge DIR")
    if args.rounds < 1 or args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        ap.error("need --rounds >= 1, --rate > 0, --duration > 0, --warmup >= 0")
    out = args.rejudge.resolve() if args.rejudge else collect(args)
    if args.collect_only:
        return 0
    from calibration_judge import judge_benchmark

    given = CONTROLS if args.control is None else args.control
    controls = [[n.strip() for n in c.split(",")] for c in given if c.strip()]
    for line in judge_benchmark(out, json_out=args.json, controls=controls):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
