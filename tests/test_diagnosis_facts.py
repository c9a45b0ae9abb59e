"""extract_facts by value on run directories built file by file (RunBuilder: hlogs written
by hdrh itself), and the rules that read per-second facts through it.

The run: closed model, 2 s warm-up, 5 measured 1-s intervals (k = 2..6), two request names.
Per measured interval, 80 ``POST fraud`` requests (fetch 1 ms, infer 5 ms, serialize
0.5 ms inside app 7 ms, residual 1 ms: client 8 ms) except for five whose infer takes 60 ms
(app 62 ms, client 63 ms), and 40 ``POST churn`` requests (fetch 2 ms, serialize 1 ms in app
3.5 ms, residual 0.5 ms: client 4 ms); 4 fraud requests fail in interval 3. Resources at
4 Hz; the system is 95 % busy in intervals 4 and 5 (others take 60 % of the machine there)
and 40 % otherwise. Expected values below are computed from these numbers, the latency
ones through hdrh's own histograms (their 3 significant digits are the format's, not an
approximation of the product's).
"""

from __future__ import annotations

import math

import pytest
from synthetic_runs import histogram_of
from test_rundir import T0, RunBuilder

from harness import stats
from harness.analysis.diagnosis.engine import diagnose_facts
from harness.analysis.diagnosis.facts import ProfileFacts, TagFacts, WorkerFacts, extract_facts
from harness.analysis.diagnosis.single import machine_contended, oncpu_ratio, tail_in_contention
from harness.rundir import RunDir, write_json_atomic, write_run_json

MEASURED = (2, 3, 4, 5, 6)
HOT = (4, 5)
FRAUD, CHURN = "POST fraud", "POST churn"
TAIL_US = 60_000
MiB = 2**20


def build(tmp_path, tail_at: dict[int, int]) -> RunBuilder:
    """The run of the module docstring; ``tail_at``: interval -> fraud requests with a
    60 ms infer in it (five in all)."""
    assert sum(tail_at.values()) == 5
    b = RunBuilder(tmp_path)
    meta = b.meta()
    meta["target"]["models"] = {"churn": {"default_version": "v1"}, "fraud": {"versions": []}}
    write_run_json(b.path, meta)
    fraud: dict[str, dict[int, list[int]]] = {k: {0: [3_000_000] * 5, 1: [3_000_000] * 5}
                                              for k in ("client", "fetch", "infer", "serialize",
                                                        "app", "residual")}
    for k in MEASURED:
        slow = tail_at.get(k, 0)
        infer = [TAIL_US] * slow + [5000] * (80 - slow)
        fraud["infer"][k] = infer
        fraud["fetch"][k] = [1000] * 80
        fraud["serialize"][k] = [500] * 80
        fraud["app"][k] = [i + 2000 for i in infer]
        fraud["residual"][k] = [1000] * 80
        fraud["client"][k] = [i + 3000 for i in infer]
    for metric in ("client", "client_uncorrected"):
        b.record(metric, FRAUD, fraud["client"])
        b.record(metric, CHURN, {k: [4000] * 40 for k in MEASURED})
    b.record("client_failed", FRAUD, {3: [30_000] * 4})
    for stage in ("fetch", "infer", "serialize", "app"):
        b.record("stage", FRAUD, fraud[stage], stage=stage)
    for stage, v in (("fetch", 2000), ("serialize", 1000), ("app", 3500)):
        b.record("stage", CHURN, {k: [v] * 40 for k in MEASURED}, stage=stage)
    b.record("residual", FRAUD, fraud["residual"])
    b.record("residual", CHURN, {k: [500] * 40 for k in MEASURED})
    # 10 fraud requests per interval are of an input class of their own
    b.record("client", FRAUD, {k: [8000] * 10 for k in MEASURED}, tag="input_class=odd")
    b.record("stage", FRAUD, {k: [7000] * 10 for k in MEASURED}, stage="app",
             tag="input_class=odd")
    b.intervals([{"t": T0 + k, "dt": 1.0, "warmup": k < 2, "requests": 124 if k == 3 else 120,
                  "failures": 4 if k == 3 else 0,
                  "errors": {f"{FRAUD}|HTTP 503": 4} if k == 3 else {}} for k in range(7)])
    b.load(measured={"requests": 604, "failures": 4, "achieved_rps": 120.8})
    rows = []
    for i in range(20):  # a sample at t covers (t - 0.25, t]
        t = T0 + 2 + (i + 1) * 0.25
        hot = any(T0 + k <= t < T0 + k + 1 for k in HOT)
        rows += [(t, 100, "service_master", "gunicorn", 0.0, 20_000_000, 1, 0, 0, 8),
                 (t, 101, "service_worker", "gunicorn", 40.0, 100_000_000 + i * 2 * MiB,
                  4, 0, 0, 12),
                 (t, 102, "service_worker", "gunicorn", 20.0, 100_000_000, 4, 0, 0, 12),
                 (t, 200, "loadgen", "python", 95.0 if i == 0 else 10.0, 80_000_000, 3, 0, 0,
                  10),
                 (t, 0, "system", "", 95.0 if hot else 40.0, 0, 0, 0, 0, 0)]
    b.resources(rows)
    (b.path / "profile").mkdir()
    write_json_atomic(b.path / "profile" / "status.json",
                      {"ok": True, "samples": 60, "rate_hz": 20, "lag_warnings": 1,
                       "window": {"start": T0 + 2, "end": T0 + 7}})
    write_json_atomic(b.path / "profile" / "stages.json", {
        "oncpu": {"infer": 40, "fetch": 5, "framework": 15},
        "detail": {"wall": {"stages": {"fetch": {"samples": 40, "waiting": 30},
                                       "infer": {"samples": 50, "waiting": 0},
                                       "other": {"samples": 0}}},
                   "oncpu": {"stages": {"infer": {"top_self": [
                       {"function": "predict_proba (sk/forest.py)", "samples": 35}]}}}}})
    (b.path / "profile" / "oncpu.collapsed").write_text(
        'process 100:"gunicorn";process 101:"gunicorn";main (/app.py:3);'
        "predict_proba (/sk/forest.py:10) 35\n"
        'process 100:"gunicorn";process 101:"gunicorn";main (/app.py:3);'
        "predict_proba (/sk/forest.py:12) 5\n"
        'process 100:"gunicorn";process 101:"gunicorn";main (/app.py:3);'
        "fetch (/db.py:5) 5\n"
        'process 100:"gunicorn";process 102:"gunicorn";handle (/gunicorn/sync.py:9) 15\n')
    return b


def _hist(values_by_interval: dict[int, list[int]]):
    return histogram_of(v for k in MEASURED for v in values_by_interval.get(k, []))


def _p(values: list[int], *ps: float) -> list[int]:
    got = stats.percentiles(histogram_of(values), list(ps))
    return [got[p] for p in ps]


FRAUD_INFER = [TAIL_US] * 5 + [5000] * 395


def test_extract_facts_by_value(tmp_path):
    b = build(tmp_path, {4: 3, 5: 2})
    f = extract_facts(RunDir(b.path))
    # what was asked of the run
    assert (f.run_id, f.model, f.status) == (b.path.name, "closed", "complete")
    assert (f.scenario, f.scenario_sha256) == ("/abs/scenarios/production.py", "ab" * 32)
    assert (f.users, f.target_rps, f.nominal_rps) == (10, None, None)
    assert (f.late, f.started, f.scheduled, f.dropped) == (None, None, None, None)
    # requests: 600 ok + 4 failed in 5 s; warm-up values (3 s each) left out everywhere
    assert (f.requests, f.failures, f.duration_s, f.achieved_rps) == (604, 4, 5.0, 120.8)
    assert f.errors == {"HTTP 503": 4}
    assert f.schedule_delay_share == 0.0  # closed model: corrected == uncorrected
    clients = [4000] * 200 + [8000] * 395 + [63_000] * 5
    client_total = sum(clients)
    assert f.client is not None
    assert (f.client.name, f.client.share, f.client.count) == ("client", 1.0, 600)
    assert f.client.mean_us == pytest.approx(client_total / 600, rel=1e-3)
    assert [f.client.p50_us, f.client.p99_us] == _p(clients, 50, 99)
    # stages: share of the summed client time, p50/p99 of each stage over both names
    want = {"fetch": [1000] * 400 + [2000] * 200, "infer": FRAUD_INFER,
            "serialize": [500] * 400 + [1000] * 200}
    assert set(f.stages) == set(want)
    for name, values in want.items():
        st = f.stages[name]
        assert (st.name, st.count) == (name, len(values))
        assert st.share == pytest.approx(sum(values) / client_total, abs=1e-4), name
        assert st.mean_us == pytest.approx(sum(values) / len(values), rel=1e-3), name
        assert [st.p50_us, st.p99_us] == _p(values, 50, 99), name
    app = [i + 2000 for i in FRAUD_INFER] + [3500] * 200
    assert f.app is not None and f.app.count == 600
    assert f.app.share == pytest.approx(sum(app) / client_total, abs=1e-4)
    residual = [1000] * 400 + [500] * 200
    assert f.residual is not None and f.residual.count == 600
    assert f.residual.share == pytest.approx(sum(residual) / client_total, abs=1e-4)
    assert f.residual.mean_us == pytest.approx(sum(residual) / 600, rel=1e-3)
    # the histograms a baseline comparison needs: measured window only
    counts = {k: h.get_total_count() for k, h in f.histograms.items()}
    assert counts == {"client": 600, "residual": 600, "stage:app": 600, "stage:fetch": 600,
                      "stage:infer": 400, "stage:serialize": 600}
    assert f.by_name == {}  # only asked for with a baseline
    # self-check: the summary's, carried over
    checks = {c.check: c for c in f.self_check}
    assert checks["run_complete"].ok and checks["measured_data"].ok
    # resources: 20 samples, every one inside the window
    assert f.cpu_count == 2
    assert f.workers == [WorkerFacts(101, 40.0, 40.0, 0.0), WorkerFacts(102, 20.0, 20.0, 0.0)]
    assert f.service_cpu_mean_pct == 60.0
    assert f.loadgen_cpu_mean_pct == (95.0 + 19 * 10.0) / 20
    assert f.loadgen_saturated_share == 1 / 20  # one sample above 90 % of a core
    assert f.system_cpu_mean_pct == (8 * 95.0 + 12 * 40.0) / 20  # 62: below the busy mark
    assert f.machine_share == {"service": 60.0 / 200, "loadgen": round(14.25 / 200, 4)}
    assert f.concurrency == 2  # service_options workers, sync workers
    # service RSS: 220 MB, worker 101 grows 2 MiB per 0.25 s sample: a straight line
    assert f.rss_start_bytes == 220_000_000 and f.rss_growth_bytes == 19 * 2 * MiB
    assert f.rss_slope_bytes_per_s == pytest.approx(8 * MiB, rel=1e-9)
    assert f.rss_fit_r2 == pytest.approx(1.0, abs=1e-9)
    # the input class: 50 of 604 requests, its service time 7 ms
    (tag,) = f.tags
    assert tag == TagFacts("input_class=odd", "input_class", "odd", 50, 50 / 604, 0.0,
                           *_p([8000] * 50, 50, 99), _p([7000] * 50, 99)[0])
    # the profile: counts, the wall view's waiting share, the leaf functions by key
    assert f.profile == ProfileFacts(
        samples=60, rate_hz=20.0, window_s=5.0,
        oncpu={"infer": 40, "fetch": 5, "framework": 15},
        waiting={"fetch": 0.75, "infer": 0.0},
        top_self={"infer": [("predict_proba (sk/forest.py)", 35)]},
        functions={"predict_proba (/sk/forest.py)": 40, "fetch (/db.py)": 5,
                   "handle (/gunicorn/sync.py)": 15},
        lag_warnings=1,
        running={"infer": 0})  # the fixture's on-CPU stage block carries no sample count
    # 40 on-CPU samples at 20 Hz = 2 s, of 400 x infer's mean wall time
    assert oncpu_ratio(f, "infer") == pytest.approx(
        2.0 / (sum(FRAUD_INFER) / 1e6), rel=1e-3)
    # model versions: the target's default, then what the harness asked for
    assert f.model_versions == {"churn": "v1", "fraud": "v2"}


def test_per_name_histograms_are_read_on_request(tmp_path):
    f = extract_facts(RunDir(build(tmp_path, {4: 3, 5: 2}).path), per_name=True)
    assert set(f.by_name) == {FRAUD, CHURN}
    keys = {"client", "stage:app", "stage:fetch", "stage:infer", "stage:serialize"}
    assert set(f.by_name[FRAUD]) == set(f.by_name[CHURN]) == keys
    assert f.by_name[FRAUD]["client"].get_total_count() == 400
    assert f.by_name[CHURN]["client"].get_total_count() == 200
    assert f.by_name[CHURN]["stage:infer"].get_total_count() == 0  # churn has no infer
    assert f.by_name[FRAUD]["stage:infer"].get_total_count() == 400


def test_per_second_machine_and_stage_tails_by_value(tmp_path):
    f = extract_facts(RunDir(build(tmp_path, {4: 3, 5: 2}).path))
    # per interval, the resources samples with t0 <= t < t0 + 1: system CPU and the share
    # of the machine the service (60 % of a core) and the load generator did not take
    own = {k: [(60.0 + (95.0 if (k, j) == (2, 0) else 10.0)) / 200 for j in range(n)]
           for k, n in ((2, 3), (3, 4), (4, 4), (5, 4), (6, 4))}
    want = {}
    for k, shares in own.items():
        system = 95.0 if k in HOT else 40.0
        want[round(T0 + k, 3)] = (system, max(0.0, system / 100 - sum(shares) / len(shares)))
    assert f.interval_machine.keys() == want.keys()
    for t, (system, other) in want.items():
        assert f.interval_machine[t] == (system, pytest.approx(other, abs=1e-12))
    # (interval start, values, values at or above the window's p99) per stage
    assert f.stage_tail_intervals["infer"] == [
        (round(T0 + k, 3), 80, {4: 3, 5: 2}.get(k, 0)) for k in MEASURED]
    # fetch: p99 over the window is churn's 2 ms, so every churn fetch is "in the tail"
    assert f.stage_tail_intervals["fetch"] == [(round(T0 + k, 3), 120, 40) for k in MEASURED]


def test_a_tail_in_the_busy_seconds_is_the_machines(tmp_path):
    """The fault-matrix rule through extract_facts: the window's mean system CPU (62 %) is
    below the busy mark, but every infer value above p99 fell in the two seconds when
    other processes took 60 % of the machine: the long tail is information, with the
    evidence, not a model warning. The same tail in calm seconds is the model's."""
    busy = extract_facts(RunDir(build(tmp_path / "busy", {4: 3, 5: 2}).path))
    assert not machine_contended(busy)
    # all 5 tail values in hot seconds, which hold 160 of the 400 values: 1.0 >= 2 x 0.4
    assert tail_in_contention(busy, "infer") == 1.0
    (tail,) = [x for x in diagnose_facts(busy) if "long tail" in x.title]
    p99, p50 = busy.stages["infer"].p99_us, busy.stages["infer"].p50_us
    assert (tail.severity, tail.layer) == ("info", "model")
    assert tail.title == f"inference has a long tail: p99 {p99 / p50:.1f}x its p50"
    assert tail.evidence[1] == (
        "100.0 % of its values above p99 fell in seconds when the machine was busy (>= 85 %) "
        "and other processes took >= 20.0 % of it (resources.csv against the interval "
        "histograms)")

    calm = extract_facts(RunDir(build(tmp_path / "calm", {2: 3, 6: 2}).path))
    assert tail_in_contention(calm, "infer") is None
    (tail,) = [x for x in diagnose_facts(calm) if "long tail" in x.title]
    assert (tail.severity, tail.layer) == ("warning", "model")
    # the tail's own line, then what evidence the rule read: no contention line
    assert len(tail.evidence) == 2 and tail.evidence[1].startswith("evidence: ")

    # half the tail in a hot second is not enough: 3 of 5 (0.6) < 2 x 80/400 x 2 (0.8)
    mixed = extract_facts(RunDir(build(tmp_path / "mixed", {4: 3, 6: 2}).path))
    assert tail_in_contention(mixed, "infer") is None


def test_a_run_without_resources_or_profile_has_no_such_facts(tmp_path):
    b = RunBuilder(tmp_path)
    b.write_meta()
    b.record("client", FRAUD, {k: [2000] * 30 for k in MEASURED})
    f = extract_facts(RunDir(b.path))
    assert (f.requests, f.failures, f.client.count if f.client else None) == (150, 0, 150)
    assert f.stages == {} and f.app is None and f.residual is None
    assert f.workers == [] and f.service_cpu_mean_pct is None and f.system_cpu_mean_pct is None
    assert f.rss_slope_bytes_per_s is None and f.profile is None
    assert f.interval_machine == {} and f.stage_tail_intervals == {}
    assert f.concurrency == 2  # from service_options alone
    assert math.isclose(f.achieved_rps or 0, 30.0)
