"""Where an MLServer run's profile samples are: per process, per package, per stage.

Reads RUN/profile/oncpu.collapsed (and wall.collapsed when the run had --profile-wall)
and prints, per view:

- samples per MLServer process role (the main process: uvicorn/FastAPI, gRPC, the
  metrics server and the dispatcher; the parallel inference workers; multiprocessing's
  resource tracker), read from the process frames the harness writes;
- per package, the share of samples whose *leaf* Python frame is in it ("self": where the
  CPU was) and whose stack has it anywhere ("total"), overall and per role; packages are
  site-packages top-level names, ``mlserver/<subpackage>``, or ``stdlib:<module>``;
- the stage split with each stage map given (default: the bundled reference_service map,
  which the run used, and harness/stagemaps/mlserver.json), recomputed offline with
  harness.run.collectors.stagemap.build_stages: "other" before and after, per role too.

    .venv/bin/python benchmarks/mlserver/profile_shares.py runs/RUN [--top 25] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.run.collectors.stagemap import build_stages, load_stage_map  # noqa: E402
from harness.rundir.stacks import Frame, Stack, read_collapsed  # noqa: E402

DEFAULT_MAPS = ("reference_service", str(REPO / "harness" / "stagemaps" / "mlserver.json"))
_SITE = re.compile(r"/(?:site|dist)-packages/([^/]+)(?:/([^/]+))?")
_STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+)")


def role(stack: Stack) -> str:
    """The MLServer process a stack came from, by the innermost process frame's command."""
    procs = [f for f in stack.frames if f.is_process]
    if not procs:
        return "unknown"
    command = procs[-1].function
    if "resource_tracker" in command:
        return "resource tracker"
    if "multiprocessing.spawn" in command or "multiprocessing-fork" in command:
        return "inference worker"
    if "mlserver" in command and " start " in command + " ":
        return "main"
    return "other process"


def package(frame: Frame) -> str:
    """A frame's package: site-packages top level (mlserver split by subpackage), or stdlib."""
    path = frame.file or ""
    match = _SITE.search(path)
    if match:
        top, sub = match.group(1), match.group(2)
        top = top.removesuffix(".py")
        if top.endswith(".so") or ".cpython-" in top:
            top = top.split(".")[0]
        if top == "mlserver" and sub:
            return "mlserver/" + sub.removesuffix(".py")
        return top
    match = _STDLIB.search(path)
    if match:
        return "stdlib:" + match.group(1).removesuffix(".py")
    if path.startswith("<"):
        return path  # <string>, <frozen importlib._bootstrap>
    return path or frame.function


def package_shares(stacks: list[Stack]) -> dict[str, Any]:
    total = sum(s.count for s in stacks)
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    for stack in stacks:
        frames = [f for f in stack.frames if not f.is_process]
        if not frames:
            self_counts["(no Python frame)"] += stack.count
            continue
        self_counts[package(frames[-1])] += stack.count
        for pkg in {package(f) for f in frames}:
            incl_counts[pkg] += stack.count
    return {"samples": total,
            "self": {k: v / total for k, v in self_counts.most_common()} if total else {},
            "total": {k: incl_counts[k] / total for k in sorted(
                incl_counts, key=lambda k: -incl_counts[k])} if total else {}}


def stage_split(stacks: list[Stack], map_name: str) -> dict[str, Any]:
    smap = load_stage_map(map_name)
    doc = build_stages({"view": stacks}, smap)
    counts = doc["view"]
    total = sum(counts.values())
    by_role: dict[str, dict[str, float]] = {}
    grouped: dict[str, list[Stack]] = defaultdict(list)
    for s in stacks:
        grouped[role(s)].append(s)
    for r, group in grouped.items():
        c = build_stages({"view": group}, smap)["view"]
        t = sum(c.values())
        by_role[r] = {k: v / t for k, v in c.items() if v} if t else {}
    detail = doc["detail"]["view"]["stages"]
    return {"map": smap.name, "source": smap.source, "samples": total,
            "shares": {k: v / total for k, v in counts.items()} if total else {},
            "waiting": {k: detail[k]["waiting"] for k in detail},
            "busy_shares": _busy_shares(detail),
            "other_top_self": detail.get("other", {}).get("top_self", []),
            "top_self": {k: detail[k]["top_self"][:5] for k in detail},
            "by_role": by_role}


def _busy_shares(detail: dict[str, Any]) -> dict[str, float]:
    """Per stage, the share of the samples whose leaf is not a wait (a blocking call)."""
    busy = {k: v["samples"] - v["waiting"] for k, v in detail.items()}
    total = sum(busy.values())
    return {k: b / total for k, b in busy.items()} if total else {}


def process_check(run: Path, stacks: list[Stack]) -> list[dict[str, Any]]:
    """Per sampled process: on-CPU samples / (rate x window), the CPU that py-spy's on-CPU
    view implies, next to psutil's mean CPU over the same window (resources.csv)."""
    try:
        status = json.loads((run / "profile" / "status.json").read_text())
    except (OSError, ValueError):
        return []
    window = status.get("window") or {}
    rate = status.get("rate_hz")
    if not window or not rate:
        return []
    seconds = window["end"] - window["start"]
    per_pid: Counter[str] = Counter()
    roles: dict[str, str] = {}
    for s in stacks:
        per_pid[_pid(s)] += s.count
        roles[_pid(s)] = role(s)
    cpu: dict[str, list[float]] = defaultdict(list)
    with contextlib.suppress(OSError):
        with (run / "resources.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                if window["start"] <= float(row["t"]) <= window["end"]:
                    with contextlib.suppress(ValueError):
                        cpu[row["pid"]].append(float(row["cpu_percent"]))
    return [{"pid": pid, "role": roles[pid], "samples": n,
             "implied_cpu_pct": round(100 * n / (rate * seconds), 1),
             "psutil_cpu_pct": round(sum(cpu[pid]) / len(cpu[pid]), 1) if cpu[pid] else None}
            for pid, n in per_pid.most_common()]


def analyse(run: Path, maps: list[str], top: int) -> dict[str, Any]:
    out: dict[str, Any] = {"run": str(run), "views": {}}
    for view in ("oncpu", "wall"):
        path = run / "profile" / f"{view}.collapsed"
        if not path.exists():
            continue
        stacks = read_collapsed(path)
        roles: dict[str, list[Stack]] = defaultdict(list)
        for s in stacks:
            roles[role(s)].append(s)
        total = sum(s.count for s in stacks)
        out["views"][view] = {
            "samples": total,
            "roles": {r: {"samples": sum(s.count for s in g),
                          "pids": sorted({_pid(s) for s in g}),
                          "packages": package_shares(g)}
                      for r, g in sorted(roles.items(), key=lambda kv: -sum(
                          s.count for s in kv[1]))},
            "packages": package_shares(stacks),
            "process_check": process_check(run, stacks) if view == "oncpu" else [],
            "stages": {m: stage_split(stacks, m) for m in maps},
        }
    return out


def _pid(stack: Stack) -> str:
    """The pid of the process a stack came from (its innermost process frame)."""
    procs = [f for f in stack.frames if f.is_process]
    return procs[-1].function.split(":")[0].removeprefix("process ") if procs else "?"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def print_report(doc: dict[str, Any], top: int) -> None:
    print(f"run {doc['run']}")
    for view, v in doc["views"].items():
        print(f"\n## {view}: {v['samples']} samples")
        print("\nprocess role | pids | samples | share")
        for r, info in v["roles"].items():
            print(f"{r} | {' '.join(info['pids'])} | {info['samples']} | "
                  f"{_pct(info['samples'] / v['samples'])}")
        for row in v["process_check"]:
            print(f"  on-CPU check pid {row['pid']} ({row['role']}): {row['samples']} samples "
                  f"= {row['implied_cpu_pct']} % of a core at the profile rate; psutil: "
                  f"{row['psutil_cpu_pct']} %")
        print("\npackages (all processes): self share (leaf frame) / total share (on the stack)")
        pk = v["packages"]
        for name, share in list(pk["self"].items())[:top]:
            print(f"  {name:<42} self {_pct(share):>8}   total {_pct(pk['total'].get(name, 0)):>8}")
        for r, info in v["roles"].items():
            pk = info["packages"]
            print(f"\n  [{r}] {info['samples']} samples: top packages by self share")
            for name, share in list(pk["self"].items())[:12]:
                print(f"    {name:<40} self {_pct(share):>8}   total "
                      f"{_pct(pk['total'].get(name, 0)):>8}")
        for split in v["stages"].values():
            shares = ", ".join(f"{k} {_pct(s)}" for k, s in split["shares"].items())
            print(f"\nstage map {split['map']}: {shares}")
            waiting = {k: w for k, w in split["waiting"].items() if w}
            if waiting:
                print(f"  waiting samples per stage: {waiting}")
                print("  without the waiting samples: " + ", ".join(
                    f"{k} {_pct(b)}" for k, b in split["busy_shares"].items()))
            for r, shares_r in split["by_role"].items():
                print(f"  [{r}] " + ", ".join(f"{k} {_pct(s)}" for k, s in shares_r.items()))
            for stage, tops in split["top_self"].items():
                if tops and stage != "other":
                    print(f"  {stage} top self: " + "; ".join(
                        f"{t['function'].split(' (')[0]} {t['samples']}" for t in tops))
            if split["other_top_self"]:
                print("  'other' top self: " + "; ".join(
                    f"{t['function'].split(' (')[0]} {t['samples']}"
                    for t in split["other_top_self"][:6]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory with profile/*.collapsed")
    parser.add_argument("--map", action="append", dest="maps",
                        help="stage map (file or bundled name); repeatable "
                             "(default: reference_service and harness/stagemaps/mlserver.json)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    maps = args.maps or [m for m in DEFAULT_MAPS if not m.endswith(".json") or Path(m).exists()]
    if not (args.run / "profile").is_dir():
        print(f"error: {args.run} has no profile/ directory", file=sys.stderr)
        return 2
    doc = analyse(args.run, maps, args.top)
    print_report(doc, args.top)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
