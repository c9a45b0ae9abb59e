"""Judging the runs of compare_calibration.py: false alarms, detection and CI coverage.

Pure reading of the stored runs (harness.analysis.compare.compare_runs), so the same runs
are judged again with `compare_calibration.py --rejudge DIR` whenever the statistics
change. The noise calibration of each round is measured on the *other* rounds' A/A pairs
(leave one round out: a pair never calibrates its own judgement), the first
``noise_pairs`` of them (aa1 pairs first, then aa3 rounds), as `harness calibrate
--pairs N` would measure it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.analysis.compare import NoiseCalibration, compare_runs, measure_noise
from harness.run.ab import AbSession, read_session
from harness.rundir import RunDir

FAULT_NAME = "POST predict fraud"
PERCENTILES = (50.0, 90.0, 99.0)
_CACHE: dict[Path, RunDir] = {}


def _rd(path: Path) -> RunDir:
    if path not in _CACHE:
        _CACHE[path] = RunDir(path)
    return _CACHE[path]


def _sessions(out: Path) -> dict[int, dict[str, AbSession]]:
    state = json.loads((out / "calibration.json").read_text())
    found: dict[int, dict[str, AbSession]] = {}
    for key, info in state["sessions"].items():
        if info.get("state") != "done":
            continue
        rnd, kind = key.split("-", 1)
        found.setdefault(int(rnd), {})[kind] = read_session(Path(info["path"]))
    return found


def _rounds(s: AbSession) -> list[tuple[RunDir, RunDir]]:
    usable = {(r.round, r.side): s.path / r.dir for r in s.runs
              if r.status in ("complete", "degraded")}
    return [(_rd(usable[(k, "A")]), _rd(usable[(k, "B")])) for k in range(1, s.runs_per_side + 1)
            if (k, "A") in usable and (k, "B") in usable]


def _aa_pairs(sessions: dict[int, dict[str, AbSession]], rounds: list[int]
              ) -> list[tuple[RunDir, RunDir]]:
    first = [p for r in rounds if "aa1" in sessions[r] for p in _rounds(sessions[r]["aa1"])]
    more = [p for r in rounds if "aa3" in sessions[r] for p in _rounds(sessions[r]["aa3"])]
    return first + more


def _noise(sessions: dict[int, dict[str, AbSession]], rnd: int, n: int
           ) -> NoiseCalibration | None:
    pairs = _aa_pairs(sessions, [r for r in sorted(sessions) if r != rnd])[:n]
    return measure_noise(pairs, PERCENTILES) if len(pairs) >= 2 else None


def _judge(a: list[RunDir], b: list[RunDir], noise: NoiseCalibration | None,
           min_effect: float, control: list[str] | None = None) -> dict[str, Any]:
    j = compare_runs(a, b, noise=noise, percentiles=PERCENTILES, min_effect=min_effect,
                     control=control)
    names = {n.name: n.verdict for n in j.names}
    if not j.comparable:  # the machine changed within the pair: what compare exits 2 for
        names = {n: "inconclusive" for n in names}
    rows = [{"name": r.series.name, "series": r.series.label, "p": r.percentile,
             "ratio": r.ratio, "low": r.low, "high": r.high, "p_adj": r.p_adjusted,
             "verdict": r.verdict} for r in j.rows]
    verdict = j.verdict if j.comparable else "inconclusive"
    return {"verdict": verdict, "exit": j.exit_code(), "names": names,
            "problems": j.problems,
            "rows": rows, "family": j.family}


def _cases(sessions: dict[int, dict[str, AbSession]]) -> list[tuple[str, int, int, list, list]]:
    """(kind, K, round, A runs, B runs) of every comparison judged."""
    cases = []
    for rnd, kinds in sorted(sessions.items()):
        if "aa1" in kinds:
            cases += [("A/A", 1, rnd, [a], [b]) for a, b in _rounds(kinds["aa1"])]
        for kind, label in (("aa3", "A/A"), ("ab3", "A/B")):
            if kind not in kinds:
                continue
            pairs = _rounds(kinds[kind])
            cases += [(f"{label} (in K=3)", 1, rnd, [a], [b]) for a, b in pairs]
            if len(pairs) == 3:
                cases.append((label, 3, rnd, [a for a, _ in pairs], [b for _, b in pairs]))
    return cases


def judge_all(out: Path, noise_pairs: int = 10, min_effect: float | None = None,
              controls: Sequence[Sequence[str]] = ()) -> list[dict[str, Any]]:
    """Every case judged with and without the host's noise calibration; with ``controls``
    also the K = 3 cases divided by each of these sets of request names (``--control``
    once per name of a set; it needs rounds)."""
    from harness.analysis.compare import DEFAULT_MIN_EFFECT

    margin = DEFAULT_MIN_EFFECT if min_effect is None else min_effect
    sessions = _sessions(out)
    noises = {r: _noise(sessions, r, noise_pairs) for r in sessions}
    results = []
    for kind, k, rnd, a, b in _cases(sessions):
        for calibrated in (False, True):
            noise = noises[rnd] if calibrated else None
            if calibrated and noise is None:
                continue
            res = _judge(a, b, noise, margin)
            res.update(kind=kind, k=k, round=rnd, calibrated=calibrated,
                       noise_pairs=noise.pairs if noise else 0)
            results.append(res)
        for control in controls if k >= 2 else ():
            res = _judge(a, b, None, margin, list(control))
            res.update(kind=kind, k=k, round=rnd, calibrated=False, noise_pairs=0,
                       control=" + ".join(c.removeprefix("POST ") for c in control))
            results.append(res)
    return results


def _truth(results: list[dict[str, Any]]) -> dict[tuple[str, str, float], float]:
    """The A/B ratio of each row over all K=3 A/B sessions (geometric mean of the sessions'
    estimates): the best estimate of what the fault did, used as the truth for coverage."""
    logs: dict[tuple[str, str, float], list[float]] = {}
    for res in results:
        if res["kind"] == "A/B" and res["k"] == 3 and not res["calibrated"] \
                and not res.get("control"):
            for r in res["rows"]:
                if r["ratio"]:
                    logs.setdefault((r["name"], r["series"], r["p"]), []).append(
                        math.log(r["ratio"]))
    return {key: math.exp(statistics.fmean(v)) for key, v in logs.items()}


def _line(group: list[dict[str, Any]], truth: dict[tuple[str, str, float], float]) -> str:
    first = group[0]
    n = len(group)
    verdicts = Counter(res["verdict"] for res in group)
    aa = first["kind"].startswith("A/A")
    quiet = verdicts["no significant difference"]
    fraud = Counter(res["names"].get(FAULT_NAME) for res in group)
    others = sum(any(v == "slower" for name, v in res["names"].items()
                     if name not in (FAULT_NAME, "*")) for res in group)
    cover = [(r["low"] <= (1.0 if aa else truth.get((r["name"], r["series"], r["p"]), 1.0))
              <= r["high"]) for res in group for r in res["rows"]
             if r["low"] is not None and r["high"] is not None]
    infer = [(r["low"] <= truth.get((r["name"], r["series"], r["p"]), 1.0) <= r["high"])
             for res in group for r in res["rows"] if r["low"] is not None
             and r["name"] == FAULT_NAME and r["series"] == "infer" and r["p"] == 50.0]
    cal = f"yes ({first['noise_pairs']} pairs)" if first["calibrated"] else "no"
    if first.get("control"):
        cal = f"no; control {first['control']}"
    detect = "-" if aa else f"{fraud['slower']}/{n}"
    cov = f"{sum(cover)}/{len(cover)}" if cover else "-"
    cov_infer = "-" if aa or not infer else f"{sum(infer)}/{len(infer)}"
    return (f"| {first['kind']} | {first['k']} | {cal} | {n} | {quiet}/{n} | "
            f"{verdicts['inconclusive'] + verdicts['insufficient data']}/{n} | "
            f"{verdicts['slower'] + verdicts['faster'] if aa else others}/{n} | {detect} | "
            f"{cov} | {cov_infer} |")


def format_results(results: list[dict[str, Any]]) -> list[str]:
    truth = _truth(results)
    lines = ["| comparison | K | noise calibration | pairs | overall \"no significant "
             "difference\" | inconclusive | false alarm (A/A: slower or faster; A/B: another "
             "model slower) | fraud detected slower | rows' CI covers the truth | fraud infer "
             "p50 CI covers |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
    for res in results:
        groups.setdefault((res["kind"], res["k"], res["calibrated"], res.get("control") or ""),
                          []).append(res)
    for key in sorted(groups, key=lambda k: (k[0].startswith("A/B"), k[1], "(" in k[0], k[2],
                                             k[3])):
        lines.append(_line(groups[key], truth))
    fi = truth.get((FAULT_NAME, "infer", 50.0))
    fc = truth.get((FAULT_NAME, "client", 50.0))
    if fi and fc:
        lines.append(f"\nmeasured effect of the fault (all K=3 A/B sessions): fraud infer p50 "
                     f"{(fi - 1) * 100:+.1f} %, fraud client p50 {(fc - 1) * 100:+.1f} %")
    return lines


def speed_lines(out: Path) -> list[str]:
    """The machine-speed probe (summary resources.cpu_probe) of every pair of runs made in
    one round: how far apart A and B's probes were, against the limit compare uses."""
    from harness.analysis.compare.machine import SPEED_SHIFT_LIMIT, speed_shift

    sessions = _sessions(out)
    shifts = [(kind, speed_shift(a, b)) for kinds in sessions.values()
              for kind, s in kinds.items() for a, b in _rounds(s)]
    got = sorted(abs(x - 1.0) for _, x in shifts if x is not None)
    if not got:
        return ["\nmachine-speed probe: none of these runs has one (made before it existed)"]
    over = sum(x > SPEED_SHIFT_LIMIT for x in got)
    lines = [f"\nmachine-speed probe, |B/A - 1| over the {len(got)} pairs made in one round: "
             f"median {100 * statistics.median(got):.1f} %, p90 "
             f"{100 * got[int(0.9 * (len(got) - 1))]:.1f} %, max {100 * got[-1]:.1f} %; "
             f"{over} pairs over the limit ({100 * SPEED_SHIFT_LIMIT:.0f} %) left out"]
    return lines + _speed_explains(sessions)


def _infer_p50(run: RunDir, names: tuple[str, ...]) -> float | None:
    from harness.stats import percentiles

    logs = []
    for name in names:
        h = run.histogram("stage", name, stage="infer")
        if h.get_total_count() < 20:
            return None
        logs.append(math.log(percentiles(h, [50])[50]))
    return statistics.fmean(logs)


def _speed_explains(sessions: dict[int, dict[str, AbSession]]) -> list[str]:
    """How much of the infer p50's spread the probe explains: across all runs (the machine's
    slow drift) and within the A/A pairs of a round (what a paired comparison faces)."""
    from harness.analysis.compare.machine import cpu_probe_us

    names = ("POST predict churn", "POST predict ranking")  # the models no fault touches
    runs = [(cpu_probe_us(r), _infer_p50(r, names)) for kinds in sessions.values()
            for s in kinds.values() for pair in _rounds(s) for r in pair]
    got = [(math.log(p), v) for p, v in runs if p and v is not None]
    pairs = []
    for kinds in sessions.values():
        for kind in ("aa1", "aa3"):
            for a, b in _rounds(kinds[kind]) if kind in kinds else []:
                pa, pb, va, vb = (cpu_probe_us(a), cpu_probe_us(b), _infer_p50(a, names),
                                  _infer_p50(b, names))
                if pa and pb and va is not None and vb is not None:
                    pairs.append((vb - va, math.log(pb / pa)))
    if len(got) < 3 or len(pairs) < 3:
        return []
    corr = statistics.correlation([p for p, _ in got], [v for _, v in got])
    beta = sum(d * x for d, x in pairs) / (sum(x * x for _, x in pairs) or 1.0)
    raw = statistics.pstdev([d for d, _ in pairs])
    adj = statistics.pstdev([d - beta * x for d, x in pairs])
    return [f"churn and ranking infer p50 against the probe: correlation {corr:.2f} over "
            f"{len(got)} runs (log values); within the {len(pairs)} A/A pairs of a round the "
            f"pair's log difference has sd {100 * raw:.1f} %, {100 * adj:.1f} % after "
            f"taking out the probe's (slope {beta:.2f})"]


def judge_benchmark(out: Path, json_out: Path | None = None, noise_pairs: int = 10,
                    min_effect: float | None = None, controls: Sequence[Sequence[str]] = ()
                    ) -> list[str]:
    results = judge_all(out, noise_pairs, min_effect, controls)
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=1))
    state = json.loads((out / "calibration.json").read_text())
    loads = [s.get("loadavg") for s in state["sessions"].values() if s.get("loadavg")]
    share = 100 * state["fault_ms"] / state["infer_cpu"]["median_ms"]
    tail = (f"\nruns in {out}; fault {state['fault_ms']} ms CPU per fraud request ({share:.0f} % "
            f"of its {state['infer_cpu']['median_ms']:.2f} ms inference CPU); load average at "
            "the sessions' ends "
            f"{min(loads):.1f}-{max(loads):.1f}; judged now with load average "
            f"{os.getloadavg()[0]:.1f}" if loads else "")
    return format_results(results) + speed_lines(out) + tail_lines(out) + [tail]


def tail_lines(out: Path, noise_pairs: int = 10) -> list[str]:
    """How heavy-tailed one run per side's differences are: each undisturbed K = 1 A/A
    pair's ln(b/a) / (sqrt(2) sigma) per row (sigma from the other rounds' pairs, as
    judged), counted beyond 3, 4, 6 and 10 against a t on the calibration's pairs and on 3
    degrees of freedom (why a tail's t has at most ``noise.TAIL_DF``)."""
    from scipy import stats as sps

    from harness.analysis.compare.values import common_series, run_values

    sessions = _sessions(out)
    noises = {r: _noise(sessions, r, noise_pairs) for r in sessions}  # one per round
    z: dict[float, list[float]] = {p: [] for p in PERCENTILES}
    for kind, k, rnd, a, b in _cases(sessions):
        noise = noises[rnd]
        if k != 1 or not kind.startswith("A/A") or noise is None \
                or compare_runs(a, b, noise=noise, percentiles=PERCENTILES).problems:
            continue
        for sid in common_series([a[0], b[0]]):
            va, vb = run_values(a[0], sid, PERCENTILES), run_values(b[0], sid, PERCENTILES)
            for p in PERCENTILES:
                sigma, x, y = noise.sigma(sid.key(p)), va[p].us, vb[p].us
                if sigma and x and y:
                    z[p].append(abs(math.log(y / x)) / (math.sqrt(2) * sigma))
    lines = [f"one run per side, calibrated on {noise_pairs} pairs: rows' |ln(b/a)| / (sqrt 2 "
             "sigma) beyond 3, 4, 6, 10 (seen / a t on the pairs expects / a t on 3 df)"]
    for p, got in z.items():
        if got:
            cells = [f"{sum(v > c for v in got)} / "
                     f"{len(got) * 2 * sps.t.sf(c, noise_pairs):.1f} / "
                     f"{len(got) * 2 * sps.t.sf(c, 3):.1f}" for c in (3, 4, 6, 10)]
            lines.append(f"  p{p:g} ({len(got)} rows): " + "; ".join(cells))
    return lines
