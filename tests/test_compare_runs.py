"""Comparisons across runs (harness.analysis.compare.runs, names, noise, judged; the
commands compare and calibrate) on synthetic run directories with known differences."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import T0, make_run

from harness.analysis.compare import (
    compare_names,
    compare_runs,
    format_judged,
    measure_noise,
    read_noise,
    write_noise,
)
from harness.analysis.compare.control import combined
from harness.analysis.compare.runs import rounds
from harness.analysis.compare.values import RunValue
from harness.rundir import RunDir

RUN_S = 60.0  # a run's span: the next one starts after it


def _make(path: Path, rng: np.random.Generator, *, t0: float, machine: float = 1.0,
          infer: float = 1.0, n: int = 600, **kw: object) -> RunDir:
    """One run of 'predict': infer lognormal (median 5 ms x infer x machine, sigma .3),
    fetch 1 ms, residual 2 ms x machine; client = their sum."""
    fetch = np.exp(rng.normal(math.log(1000), 0.2, n))
    inf = np.exp(rng.normal(math.log(5000 * infer * machine), 0.3, n))
    res = np.exp(rng.normal(math.log(2000 * machine), 0.3, n))
    series = {("client", "predict", None): np.rint(fetch + inf + res),
              ("stage", "predict", "fetch"): np.rint(fetch),
              ("stage", "predict", "infer"): np.rint(inf),
              ("residual", "predict", None): np.rint(res)}
    return make_run(path, series, t0=t0, **kw)  # type: ignore[arg-type]


def _session(tmp: Path, rng: np.random.Generator, k: int, infer_b: float, start: float,
             drift: float = 0.02) -> tuple[list[RunDir], list[RunDir]]:
    """K rounds, A then B, each round on its own machine state (shared by its two runs)."""
    a, b = [], []
    for i in range(k):
        machine = math.exp(rng.normal(0, drift))
        t = start + 2 * i * RUN_S
        a.append(_make(tmp / f"a{start:.0f}-{i}", rng, t0=t, machine=machine))
        b.append(_make(tmp / f"b{start:.0f}-{i}", rng, t0=t + RUN_S, machine=machine,
                       infer=infer_b))
    return a, b


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(3)
    pairs = []
    for i in range(8):
        a, b = _session(tmp, rng, 1, 1.0, T0 + 1000 * i)
        pairs.append((a[0], b[0]))
    return measure_noise(pairs)


def test_k_runs_paired_with_calibration_find_a_known_slowdown(tmp_path: Path, noise) -> None:
    rng = np.random.default_rng(5)
    a, b = _session(tmp_path, rng, 3, 1.3, T0 + 50_000)
    assert rounds(a, b) == [(0, 0), (1, 1), (2, 2)]
    j = compare_runs(a, b, noise=noise)
    infer = next(r for r in j.rows if r.series.label == "infer" and r.percentile == 50)
    assert infer.method == "paired-log" and infer.df == 8 + 2
    assert infer.ratio == pytest.approx(1.3, rel=0.03) and infer.verdict == "slower"
    assert infer.low < infer.ratio < infer.high < 1.4
    fetch = next(r for r in j.rows if r.series.label == "fetch" and r.percentile == 50)
    assert fetch.verdict == "no significant difference"
    assert [n.verdict for n in j.names] == ["slower"] and j.exit_code() == 1
    text = "\n".join(format_judged(j))
    assert 'verdict "predict": slower: ' in text and "infer p50 +" in text and "(exit 1:" in text
    # A/A: nothing, exit 0
    a2, b2 = _session(tmp_path, rng, 3, 1.0, T0 + 90_000)
    quiet = compare_runs(a2, b2, noise=noise)
    assert quiet.verdict == "no significant difference" and quiet.exit_code() == 0


def test_one_run_per_side_without_calibration_is_never_slower(tmp_path: Path, noise) -> None:
    rng = np.random.default_rng(7)
    a, b = _session(tmp_path, rng, 1, 1.5, T0)
    j = compare_runs(a, b)
    infer = next(r for r in j.rows if r.series.label == "infer" and r.percentile == 50)
    assert infer.samples_differ and infer.p_value is None and infer.verdict == "inconclusive"
    assert all(r.verdict != "slower" for r in j.rows)
    assert j.verdict == "inconclusive" and j.exit_code() == 2
    assert "the run-to-run noise is unknown" in "\n".join(format_judged(j))
    # with this host's calibration the same two runs are judged: slower
    cal = compare_runs(a, b, noise=noise)
    infer = next(r for r in cal.rows if r.series.label == "infer" and r.percentile == 50)
    assert (infer.method, infer.verdict, cal.exit_code()) == ("calibrated", "slower", 1)


def test_a_difference_inside_the_noise_is_within_run_to_run_noise(tmp_path: Path) -> None:
    from harness.analysis.compare import NoiseCalibration
    from harness.stats.runs import RunNoise

    rng = np.random.default_rng(11)
    a, b = _session(tmp_path, rng, 1, 1.12, T0)
    loud = NoiseCalibration(RunNoise({"predict|stage:infer|p50": 0.2}, 10, "h"), {})
    row = next(r for r in compare_runs(a, b, noise=loud).rows
               if r.series.label == "infer" and r.percentile == 50)
    assert row.samples_differ and row.verdict == "within run-to-run noise"


def test_a_calibrated_tail_is_judged_on_at_most_three_degrees_of_freedom(
        tmp_path: Path) -> None:
    """A p90/p99 moves between identical runs by rare events (heavy-tailed, TAIL_DF): one
    run per side, calibrated on 10 pairs, its t has 3 degrees of freedom, a p50's 10."""
    from harness.analysis.compare import NoiseCalibration
    from harness.analysis.compare.noise import TAIL_DF
    from harness.stats.runs import RunNoise

    rng = np.random.default_rng(19)
    a, b = _session(tmp_path, rng, 1, 1.0, T0)
    keys = {f"predict|stage:infer|p{p:g}": 0.1 for p in (50, 90, 99)}
    cal = NoiseCalibration(RunNoise(keys, 10, "h"), {})
    assert (cal.df(50.0), cal.df(90.0), cal.df(99.0)) == (10, TAIL_DF, TAIL_DF) == (10, 3, 3)
    assert cal.key_df("predict|stage:infer|p99") == 3 and cal.key_df("no percentile") == 10
    rows = {r.percentile: r for r in compare_runs(a, b, noise=cal).rows
            if r.series.label == "infer"}
    assert (rows[50.0].df, rows[90.0].df, rows[99.0].df) == (10, 3, 3)
    # the same difference against the same sigma: the tail's interval is wider
    wide = [math.log(r.high / r.low) / 2 / 0.1 / math.sqrt(2) for r in (rows[50.0], rows[99.0])]
    assert wide == pytest.approx([2.228, 3.182], rel=1e-3)  # t 0.975 on 10 and on 3 df


def test_runs_not_in_rounds_are_compared_unpaired_and_said_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    a = [_make(tmp_path / f"a{i}", rng, t0=T0 + i * RUN_S) for i in range(2)]
    b = [_make(tmp_path / f"b{i}", rng, t0=T0 + (2 + i) * RUN_S) for i in range(2)]
    assert rounds(a, b) is None
    j = compare_runs(a, b)
    assert any("not made in rounds" in n for n in j.notes)
    assert {r.method for r in j.rows} == {"welch-log"}
    with pytest.raises(ValueError, match="only once across both sides"):
        compare_runs(a, [a[0]])


def test_runs_of_different_settings_are_not_comparable(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    a = _make(tmp_path / "a", rng, t0=T0)
    b = _make(tmp_path / "b", rng, t0=T0 + RUN_S, load={"users": 40})
    j = compare_runs([a], [b])
    assert not j.comparable and j.exit_code() == 2 and j.exit_code(force=True) != 1
    assert "NOT COMPARABLE" in "\n".join(format_judged(j))


def test_noise_file_round_trip_and_mismatches(tmp_path: Path, noise) -> None:
    path = write_noise(noise, tmp_path / "cache" / "noise-h.json")
    again = read_noise(path)
    assert again.pairs == 8 and again.noise.host == "h"
    assert again.sigma("predict|stage:infer|p50") == pytest.approx(
        noise.sigma("predict|stage:infer|p50"), abs=1e-6)
    rng = np.random.default_rng(19)
    other = _make(tmp_path / "other", rng, t0=T0, load={"duration_s": 30.0})
    assert again.mismatches(other) == ["load setting duration_s: calibration 10.0, run 30.0"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "run-noise", "pairs": 1, "sigma": {"x": 0.1}}))
    with pytest.raises(ValueError, match=r"bad.json: a noise calibration needs >= 2 A/A pairs"):
        read_noise(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a noise calibration"):
        read_noise(bad)


def test_two_names_of_one_run(tmp_path: Path) -> None:
    from harness.stats.compare import quantile_diff, quantile_diff_p

    rng = np.random.default_rng(23)
    v1 = np.exp(rng.normal(math.log(5000), 0.3, 2000))
    same = np.exp(rng.normal(math.log(5000), 0.3, 2000))
    run = make_run(tmp_path / "r", {("client", "v1", None): np.rint(v1),
                                    ("client", "v1 again", None): np.rint(same),
                                    ("client", "v2", None): np.rint(v1 * 1.3)})
    slower = compare_names(run, "v1", "v2")
    assert [n.verdict for n in slower.names] == ["slower"] and slower.exit_code() == 1
    assert compare_names(run, "v1", "v1 again").exit_code() == 0
    # the p-value is the interval inverted: excluded just above it, not just below
    h1, h2 = run.histogram("client", "v1"), run.histogram("client", "v1 again")
    p = quantile_diff_p(h1, h2, 90)
    assert p is not None and 0 < p <= 1
    if p < 0.9:
        wide = quantile_diff(h1, h2, 90, 1 - p * 0.9)
        narrow = quantile_diff(h1, h2, 90, 1 - p * 1.1)
        assert wide.ci_low_us <= 0 <= wide.ci_high_us
        assert narrow.ci_low_us > 0 or narrow.ci_high_us < 0
    with pytest.raises(ValueError, match="must differ"):
        compare_names(run, "v1", "v1")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_compare_command_forms_and_exit_codes(tmp_path: Path, noise) -> None:
    from harness.run.ab import AbRun, AbSession
    from harness.rundir import write_json_atomic

    rng = np.random.default_rng(29)
    a, b = _session(tmp_path, rng, 2, 1.5, T0)
    path = write_noise(noise, tmp_path / "noise.json")
    one = _cli("compare", str(a[0].path), str(b[0].path), "--no-noise")
    assert one.returncode == 2 and "overall: inconclusive" in one.stdout
    cal = _cli("compare", str(a[0].path), str(b[0].path), "--noise", str(path))
    assert cal.returncode == 1 and 'verdict "predict": slower' in cal.stdout, cal.stdout
    listed = _cli("compare", "--a", *(str(r.path) for r in a), "--b",
                  *(str(r.path) for r in b), "--noise", str(path), "--json")
    doc = json.loads(listed.stdout)
    assert listed.returncode == 1 and doc["verdict"] == "slower" and doc["exit_code"] == 1
    dashed = _cli("compare", "--noise", str(path), *(str(r.path) for r in a), "--",
                  *(str(r.path) for r in b))
    assert dashed.returncode == 1
    session = AbSession(tmp_path, 2, ("v1", "v2"), runs=[
        AbRun(k, s, str(r.path.relative_to(tmp_path)), "complete", 0, 1.0)
        for k in (1, 2) for s, r in (("A", a[k - 1]), ("B", b[k - 1]))], state="done")
    write_json_atomic(tmp_path / "ab.json", session.to_dict())
    whole = _cli("compare", str(tmp_path), "--noise", str(path))
    assert whole.returncode == 1 and "A: v1  (2 runs" in whole.stdout
    bad = _cli("compare", str(a[0].path))
    assert bad.returncode == 2 and "give RUN_A RUN_B" in bad.stderr


def test_a_pair_in_which_the_machine_changed_is_not_judged(tmp_path: Path, noise) -> None:
    from harness.analysis.compare.machine import machine_shift

    rng = np.random.default_rng(31)

    def run(name: str, t0: float, late_ms: float, machine: float) -> RunDir:
        """A run whose load generator started its requests ``late_ms`` late (median)."""
        late = np.exp(rng.normal(np.log(late_ms * 1000), 0.3, 500))
        values = {k: np.rint(np.exp(rng.normal(math.log(v), 0.3, 600))) for k, v in (
            (("client", "predict", None), 8000 * machine),
            (("stage", "predict", "infer"), 5000 * machine))}
        values[("lateness", "*", None)] = np.rint(late)
        return make_run(tmp_path / name, values, t0=t0)

    a1, b1 = run("a1", T0, 1.0, 1.0), run("b1", T0 + RUN_S, 150.0, 3.0)
    assert machine_shift(a1, b1) == pytest.approx(100, rel=0.3)
    one = compare_runs([a1], [b1], noise=noise)
    assert not one.comparable and one.exit_code() == 2
    assert "the machine changed between a1 and b1" in one.problems[0]
    a2, b2 = run("a2", T0 + 2 * RUN_S, 1.0, 1.0), run("b2", T0 + 3 * RUN_S, 1.1, 1.0)
    a3, b3 = run("a3", T0 + 4 * RUN_S, 1.0, 1.0), run("b3", T0 + 5 * RUN_S, 1.2, 1.0)
    k3 = compare_runs([a1, a2, a3], [b1, b2, b3])
    assert k3.comparable and any(n.startswith("round left out: the machine changed")
                                 for n in k3.notes)
    infer = next(r for r in k3.rows if r.series.label == "infer" and r.percentile == 50)
    assert len([x for x in infer.a_runs if x]) == 3 and infer.df == 1  # 2 rounds kept


def test_a_round_in_which_the_machine_speed_changed_is_left_out(tmp_path: Path) -> None:
    """The CPU-speed probe (resources.cpu_probe in summary.json): a round whose B ran on a
    machine 40 % slower (the probe's unit of work 115 -> 161 µs) measures the machine."""
    from harness.analysis.compare.machine import SPEED_SHIFT_LIMIT, cpu_probe_us, speed_shift

    rng = np.random.default_rng(41)

    def run(name: str, t0: float, machine: float) -> RunDir:
        rd = _make(tmp_path / name, rng, t0=t0, machine=machine)
        probe = {"mean_us": 115.0 * machine, "median_us": 115.0 * machine,
                 "p10_us": 114.0, "p90_us": 180.0, "samples": 80.0}
        (rd.path / "summary.json").write_text(json.dumps({"resources": {"cpu_probe": probe}}))
        return rd

    a = [run(f"a{i}", T0 + 2 * i * RUN_S, 1.0) for i in range(3)]
    b = [run(f"b{i}", T0 + (2 * i + 1) * RUN_S, 1.4 if i == 2 else 1.0) for i in range(3)]
    assert cpu_probe_us(a[0]) == 115.0 and speed_shift(a[2], b[2]) == pytest.approx(1.4)
    assert speed_shift(a[0], b[0]) == 1.0 < 1 + SPEED_SHIFT_LIMIT
    k3 = compare_runs(a, b)
    left = [n for n in k3.notes if n.startswith("round left out: the machine's speed changed")]
    assert len(left) == 1 and "115 µs and 161 µs of CPU" in left[0] and "+40 %" in left[0]
    infer = next(r for r in k3.rows if r.series.label == "infer" and r.percentile == 50)
    assert infer.verdict == "no significant difference"
    one = compare_runs([a[2]], [b[2]])
    assert not one.comparable and one.exit_code() == 2
    # a run made before the probe existed: no speed, judged as before
    old = _make(tmp_path / "old", rng, t0=T0 + 10 * RUN_S)
    assert cpu_probe_us(old) is None and speed_shift(a[0], old) is None


@pytest.mark.parametrize(("method", "says"), [
    ("paired-log", "3 rounds of A and B made back to back, paired"),
    ("moderated-paired-log", "3 rounds of A and B made back to back, paired"),
    ("moderated-welch-log", "Welch's t on the runs' log values"),
    ("calibrated", "one run per side"),
])
def test_the_method_line_names_the_test_the_rows_had(method: str, says: str) -> None:
    """The moderated t keeps its test's name behind a prefix: the header still says which
    (it once said "one run per side" for three paired rounds)."""
    from harness.analysis.compare.judged import Judged, JudgedRow
    from harness.analysis.compare.report import method_lines
    from harness.analysis.compare.values import SeriesId

    k = 1 if method == "calibrated" else 3
    row = JudgedRow(SeriesId("POST predict fraud", "stage", "infer"), 50.0, (1000,) * k,
                    (1100,) * k, 300, 300, 1.1, 1.05, 1.15, 0.01, 20.0, method)
    judged = Judged("runs", ("A", "B"), ["a"] * k, ["b"] * k, 0.95, 0.05, [row])
    line = method_lines(judged)[0]
    assert says in line, line
    assert ("moderated" in line) == method.startswith("moderated-"), line


# -- a control request name (--control) ------------------------------------------------

MODELS = (("predict fraud", 5000.0), ("predict ranking", 3000.0), ("predict churn", 4000.0))


def _two_models(path: Path, rng: np.random.Generator, *, t0: float, machine: float,
                fraud: float = 1.0, n: int = 1500) -> RunDir:
    """One run serving three models on one machine, with the reference service's stages
    (app = fetch + infer + serialize): every name's infer, serialize (lognormal, sigma
    0.2) and residual scale with ``machine``, fetch does not; fraud's infer x ``fraud``."""
    series = {}
    for name, infer_us in MODELS:
        fetch = np.exp(rng.normal(math.log(800), 0.2, n))
        inf = np.exp(rng.normal(math.log(infer_us * machine * (fraud if "fraud" in name
                                                                 else 1.0)), 0.2, n))
        ser = np.exp(rng.normal(math.log(150 * machine), 0.2, n))
        res = np.exp(rng.normal(math.log(1500 * machine), 0.2, n))
        series[("client", name, None)] = np.rint(fetch + inf + ser + res)
        series[("stage", name, "app")] = np.rint(fetch + inf + ser)
        series[("stage", name, "fetch")] = np.rint(fetch)
        series[("stage", name, "infer")] = np.rint(inf)
        series[("stage", name, "serialize")] = np.rint(ser)
        series[("residual", name, None)] = np.rint(res)
    return make_run(path, series, t0=t0)


def _noisy_machine_session(tmp: Path, rng: np.random.Generator, fraud_b: float,
                           sd: float = 0.15) -> tuple[list[RunDir], list[RunDir]]:
    """Three rounds A B on a machine whose speed moves by ``sd`` from one run to the next
    (this VM's A/A pairs: 10-14 %), not shared within a round."""
    a, b = [], []
    for i in range(3):
        t = T0 + 2 * i * RUN_S
        a.append(_two_models(tmp / f"a{i}", rng, t0=t, machine=math.exp(rng.normal(0, sd))))
        b.append(_two_models(tmp / f"b{i}", rng, t0=t + RUN_S,
                             machine=math.exp(rng.normal(0, sd)), fraud=fraud_b))
    return a, b


def _row(j, name: str, label: str, p: float = 50.0):  # noqa: ANN001, ANN202
    return next(r for r in j.rows if r.series.name == name and r.series.label == label
                and r.percentile == p)


def test_a_control_name_cancels_the_machines_speed(tmp_path: Path) -> None:
    rng = np.random.default_rng(43)
    a, b = _noisy_machine_session(tmp_path, rng, fraud_b=1.15)
    plain = compare_runs(a, b)
    j = compare_runs(a, b, control="predict churn")
    infer = _row(j, "predict fraud", "infer")
    assert infer.control == "predict churn" and infer.verdict == "slower"
    # the machine's 15 % per run moves the ratio by 1.15 +- 0.15 / sqrt(3) without the
    # control; with it, by the samples' error only (1500 per name and run: ~0.6 % each)
    assert infer.ratio == pytest.approx(1.15, rel=0.05)
    raw = _row(plain, "predict fraud", "infer")
    assert math.log(raw.high / raw.low) > 2 * math.log(infer.high / infer.low)
    # fetch does not scale with the machine here, so dividing it adds the control's
    # machine moves instead: it must still not be called slower or faster
    assert _row(j, "predict fraud", "fetch").verdict == "no significant difference"
    assert [(n.name, n.verdict) for n in j.names] == [("predict fraud", "slower"),
                                                      ("predict ranking",
                                                       "no significant difference")]
    assert all(r.verdict == "control" and r.p_value is None for r in j.rows
               if r.series.name == "predict churn")
    assert not any(r.series.name == "*" for r in j.rows)
    # tails are judged as they are (CONTROL_MAX_PERCENTILE)
    assert _row(j, "predict fraud", "infer", 99.0).control is None
    assert _row(j, "predict fraud", "infer", 90.0).control == "predict churn"
    text = "\n".join(format_judged(j))
    assert "divided by the same row of the control 'predict churn'" in text and "p50÷" in text
    assert j.exit_code() == 1


def test_a_control_keeps_a_v_a_quiet_on_a_noisy_machine(tmp_path: Path) -> None:
    rng = np.random.default_rng(47)
    a, b = _noisy_machine_session(tmp_path, rng, fraud_b=1.0)
    for run in (*a, *b):  # round 2's B ran 30 % slower by the probe
        slow = 1.3 if run is b[1] else 1.0
        probe = {"mean_us": 115.0 * slow, "samples": 80.0}
        (run.path / "summary.json").write_text(json.dumps({"resources": {"cpu_probe": probe}}))
    j = compare_runs(a, b, control="POST predict churn".removeprefix("POST "))
    assert j.verdict == "no significant difference" and j.exit_code() == 0
    # the control divides the speed out: the round is kept, not left out
    assert not any(n.startswith("round left out") for n in j.notes)
    assert all(len([x for x in r.a_runs if x]) == 3 for r in j.rows if r.ratio is not None)


def test_a_control_that_cannot_be_one_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(53)
    a, b = _noisy_machine_session(tmp_path, rng, fraud_b=1.0)
    with pytest.raises(ValueError, match="at least 2 runs per side"):
        compare_runs(a[:1], b[:1], control="predict churn")
    # four runs in all, but one on side A: still one run per side there
    with pytest.raises(ValueError, match=r"at least 2 runs per side \(got 1 and 3\)"):
        compare_runs(a[:1], b, control="predict churn")
    with pytest.raises(ValueError, match=r"no such request name .* predict churn"):
        compare_runs(a, b, control="predict nothing")
    with pytest.raises(ValueError, match="a request name, not '\\*'"):
        compare_runs(a, b, control="*")
    with pytest.raises(ValueError, match="'predict churn' is given twice"):
        compare_runs(a, b, control=["predict churn", "predict churn"])
    with pytest.raises(ValueError, match="every request name of the runs is a control"):
        compare_runs(a, b, control=["predict churn", "predict ranking", "predict fraud"])
    one = [_make(tmp_path / f"one{i}", rng, t0=T0 + 10 * RUN_S * (i + 1)) for i in range(4)]
    with pytest.raises(ValueError, match="every request name of the runs is a control"):
        compare_runs(one[:2], one[2:], control="predict")


def test_several_controls_divide_by_their_geometric_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(61)
    a, b = _noisy_machine_session(tmp_path, rng, fraud_b=1.15)
    j = compare_runs(a, b, control=["predict churn", "predict ranking"])
    label = "geomean(predict churn, predict ranking)"
    infer = _row(j, "predict fraud", "infer")
    assert infer.control == label and infer.verdict == "slower"
    assert infer.ratio == pytest.approx(1.15, rel=0.05)
    # the one name left is still judged with a prior: its divided rows form one table
    # across percentiles and series (12 rows), in units of their sampling variance
    assert infer.method.startswith("moderated-")
    assert [(n.name, n.verdict) for n in j.names] == [("predict fraud", "slower")]
    assert all(r.verdict == "control" for r in j.rows if "fraud" not in r.series.name)
    assert f"control {label!r}" in " ".join(j.notes) and j.exit_code() == 1
    quiet = compare_runs(*_noisy_machine_session(tmp_path / "aa", rng, fraud_b=1.0),
                         control=["predict churn", "predict ranking"])
    assert quiet.verdict == "no significant difference"


def test_combined_controls_are_a_geometric_mean_with_its_error() -> None:
    one = ([{50.0: RunValue(400, 100, 0.04)}], [{50.0: RunValue(900, 100, 0.03)}])
    two = ([{50.0: RunValue(100, 50, 0.03)}], [{50.0: RunValue(None, 1, None)}])
    a, b = combined([one, two])
    assert a[0][50.0] == RunValue(200, 150, pytest.approx(0.025))  # sqrt(.04² + .03²) / 2
    assert b[0][50.0].us is None  # a run one control lacks has no combined value
    assert combined([one]) is one


def test_the_compare_command_with_a_control(tmp_path: Path) -> None:
    rng = np.random.default_rng(59)
    a, b = _noisy_machine_session(tmp_path, rng, fraud_b=1.3)
    sides = ["--a", *(str(r.path) for r in a), "--b", *(str(r.path) for r in b)]
    got = _cli("compare", *sides, "--no-noise", "--control", "predict churn")
    assert got.returncode == 1, got.stdout + got.stderr
    assert 'verdict "predict fraud": slower' in got.stdout and "p50÷" in got.stdout
    assert 'verdict "predict churn"' not in got.stdout
    bad = _cli("compare", *sides, "--no-noise", "--control", "predict nothing")
    assert bad.returncode == 2 and "no such request name" in bad.stderr
    assert "Traceback" not in bad.stderr
    names = _cli("compare", str(a[0].path), "--name-a", "predict fraud", "--name-b",
                 "predict churn", "--control", "predict churn")
    assert names.returncode == 2 and "--control divides runs" in names.stderr
    two = _cli("compare", *sides, "--no-noise", "--json", "--control", "predict churn",
               "--control", "predict ranking")
    assert two.returncode == 1, two.stdout + two.stderr
    rows = json.loads(two.stdout)["rows"]
    assert {r["control"] for r in rows if r["name"] == "predict fraud" and r["percentile"] < 99} \
        == {"geomean(predict churn, predict ranking)"}


# -- the floor under a row's spread: the runs' own sampling error ----------------------

def test_a_runs_percentile_carries_its_sampling_error() -> None:
    """The order-statistic band of one run against the spread of the percentile over 3000
    simulated runs (lognormal, sigma 0.3, 600 samples). Tolerance 35 %: the band is read
    from one run's samples, so it is itself an estimate (its spread over seeds is ~20 %)."""
    from hdrh.histogram import HdrHistogram

    from harness.analysis.compare.values import hist_values

    rng = np.random.default_rng(61)
    sims = np.exp(rng.normal(8.5, 0.3, (3000, 600)))
    for p in (50.0, 90.0):
        truth = float(np.std(np.log(np.percentile(sims, p, axis=1))))
        got = []
        for run in sims[:20]:
            h = HdrHistogram(1, 3_600_000_000, 3)
            for v in run:
                h.record_value(int(v))
            got.append(hist_values(h, [p])[p].se)
        assert float(np.median(got)) == pytest.approx(truth, rel=0.35), (p, truth, got)


def test_rounds_that_agree_by_chance_are_not_surer_than_their_samples() -> None:
    """Eight rows of three rounds whose B/A agree to 0.1 % (a tiny spread on 2 degrees of
    freedom), each run's percentile known to +-3 % only: without the floor the moderated t
    calls 3 % significant; with it, it is not."""
    from harness.analysis.compare.judged import JudgedRow
    from harness.analysis.compare.runs import moderated
    from harness.analysis.compare.values import SeriesId

    pairs = [(0, 0), (1, 1), (2, 2)]

    def rows(floor: float | None) -> list[JudgedRow]:
        out = []
        for k in range(8):
            a = (5000 + 10 * k, 5100 + 10 * k, 4900 + 10 * k)
            b = tuple(round(x * 1.03 * (1 + 0.001 * ((i + k) % 3 - 1))) for i, x in
                      enumerate(a))
            out.append(JudgedRow(SeriesId(f"n{k}", "stage", "infer"), 50.0, a, b, 600, 600,
                                 1.03, 1.0, 1.06, 0.5, 2.0, "paired-log",
                                 sampling_var=floor))
        return out

    sure = moderated(rows(None), pairs, 0.95)
    assert all(r.p_value is not None and r.p_value < 0.001 for r in sure)
    floored = moderated(rows(2 * 0.03 ** 2), pairs, 0.95)
    assert all(r.p_value is not None and r.p_value > 0.05 for r in floored)


def test_ab_refuses_a_control_with_one_run_per_side_before_running() -> None:
    got = _cli("ab", "scenarios/production.py", "--serve", "reference", "--rate", "30",
               "--duration", "5s", "--runs", "1", "--control", "predict churn")
    assert got.returncode == 2 and "--control needs at least 2 runs per side" in got.stderr
    assert "Traceback" not in got.stderr


def test_divided_rows_share_one_prior_in_units_of_their_sampling_error() -> None:
    """Eight rows divided by a control, four fetch-like (sampling sd 2 % per round) and four
    infer-like (sd 6 %), each varying between its rounds as much as its samples explain.
    Over their sampling variances they are alike: the prior is sure (large d0), each row's
    interval follows its own kind (fetch's a third of infer's), and a +15 % infer row is
    found. Fitted to the spreads as they are, the prior pools the two kinds toward one
    spread: fetch's interval over 1.5 times what its samples warrant."""
    from harness.analysis.compare.judged import JudgedRow
    from harness.analysis.compare.runs import moderated
    from harness.analysis.compare.values import SeriesId

    pairs = [(0, 0), (1, 1), (2, 2)]
    wobble = (0.7, 1.0, 1.3, 0.9)  # each row's spread over its sampling sd, about 1

    def rows(control: str | None) -> list[JudgedRow]:
        out = []
        for k in range(8):
            sd = 0.02 if k < 4 else 0.06
            shift = 0.14 if k == 7 else 0.0  # B/A = exp(0.14) = +15 %
            e = sd * wobble[k % 4]
            a = (50_000, 50_000, 50_000)
            b = tuple(round(50_000 * math.exp(shift + x)) for x in (-e, 0.0, e))
            out.append(JudgedRow(SeriesId(f"n{k}", "stage", "fetch" if k < 4 else "infer"),
                                 50.0, a, b, 600, 600, 1.0, 0.9, 1.1, 0.5, 2.0, "paired-log",
                                 control=control, sampling_var=sd * sd))
        return out

    def width(r: JudgedRow) -> float:
        assert r.low is not None and r.high is not None
        return math.log(r.high / r.low)

    scaled = moderated(rows("control"), pairs, 0.95)
    assert all(r.df is not None and r.df > 100 for r in scaled), [r.df for r in scaled]
    assert width(scaled[0]) / width(scaled[4]) == pytest.approx(1 / 3, rel=0.02)
    # significant after Holm over the eight rows (p x 8 <= 0.05)
    assert scaled[7].p_value is not None and scaled[7].p_value * 8 <= 0.05
    assert all(r.p_value is not None and r.p_value > 0.05 for r in scaled[:7])
    raw = moderated(rows(None), pairs, 0.95)
    assert width(raw[0]) / width(raw[4]) > 0.6  # not its own kind's third
    assert width(raw[0]) > 1.5 * width(scaled[0])
