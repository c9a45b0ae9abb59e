"""Diagnosis without Server-Timing (issue 18): the rules that work from client histograms,
psutil and the profile alone, and from trace-derived stages, on constructed facts and
collapsed stacks, checked by value."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from synthetic_runs import make_run

from harness.analysis.diagnosis import cpu, measurement, processes, tail
from harness.analysis.diagnosis.engine import Diagnosis, diagnose_facts
from harness.analysis.diagnosis.eventloop import LoopFacts, is_own_code, loop_facts
from harness.analysis.diagnosis.evidence import Evidence, evidence_line
from harness.analysis.diagnosis.facts import (
    Facts,
    Finding,
    ProcessFacts,
    ProfileFacts,
    StageFacts,
    WorkerFacts,
    active_workers,
    extract_facts,
)
from harness.analysis.diagnosis.infrastructure import worker_imbalance
from harness.analysis.diagnosis.measures import awaited_us, service_saturated
from harness.rundir.stacks import parse_collapsed

UVICORN = "/venv/bin/python -m uvicorn app:app --workers 1"
APP = "/srv/svc/app.py"
SK = "/venv/lib/python3.11/site-packages/sklearn/ensemble/predictor.py"
RUNNER = "/usr/lib/python3.11/asyncio/runners.py"


def _hist(values: list[int]) -> HdrHistogram:
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in values:
        assert h.record_value(v)
    return h


def _client(p50_ms: float, p99_ms: float, mean_ms: float | None = None, n: int = 2000,
            p999_ms: float | None = None) -> StageFacts:
    return StageFacts("client", 1.0, (mean_ms or p50_ms) * 1000, int(p50_ms * 1000),
                      int(p99_ms * 1000), n, int(p999_ms * 1000) if p999_ms else None)


def _loop(busy: float, blocked: float | None = None, ticks: int = 200, pid: int | None = 10,
          blockers: tuple[tuple[str, int], ...] = ()) -> LoopFacts:
    return LoopFacts(pid, "oncpu" if blocked is None else "wall", ticks, int(busy * ticks),
                     None if blocked is None else int(blocked * ticks), blockers)


def _profile(running: dict[str, int] | None = None, loops: tuple[LoopFacts, ...] = (),
             top_self: dict[str, list[tuple[str, int]]] | None = None,
             views: tuple[str, ...] = ("oncpu", "wall")) -> ProfileFacts:
    running = running or {"infer": 60, "framework": 30, "serialize": 5, "fetch": 5}
    functions = {fn: n for fns in (top_self or {}).values() for fn, n in fns}
    return ProfileFacts(sum(running.values()), 20.0, 10.0, dict(running), {}, top_self or {},
                        functions, 0, "python_web", views, dict(running), loops)


def _svc(**kw: object) -> Facts:
    """An async single-process service without Server-Timing: psutil and a profile."""
    base: dict[str, object] = dict(
        run_id="r", model="open", requests=2000, achieved_rps=100.0, target_rps=100.0,
        duration_s=20.0, client=_client(5.0, 15.0), service_cpu_mean_pct=30.0,
        processes=[ProcessFacts(10, "service_master", 30.0, 60.0, UVICORN)],
        profile=_profile(loops=(_loop(0.3, 0.02),)), system_cpu_mean_pct=50.0,
        machine_share={"service": 0.15, "loadgen": 0.05}, loadgen_saturated_share=0.0)
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def _ids(findings: list[Finding]) -> list[str]:
    return [f.data.get("rule", "") for f in findings]


# -- the event loop in collapsed stacks --------------------------------------------------------

def _stacks(lines: list[str]) -> list:
    return parse_collapsed("\n".join(lines) + "\n")


PROC = 'process 10:"python -m uvicorn app:app"'
LOOP = f"run (/usr/lib/python3.11/asyncio/runners.py:190);Runner.run ({RUNNER}:118)"
POOL = ("Thread._bootstrap (/usr/lib/python3.11/threading.py:1002);"
        "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:81)")


def test_loop_facts_split_idle_running_and_blocked_by_frame():
    wall = _stacks([f"{PROC};{LOOP} 40",                                  # idle: the driver
                    f"{PROC};{LOOP};predict ({APP}:166) 120",             # time.sleep there
                    f"{PROC};{LOOP};predict ({APP}:170);TreePredictor.predict ({SK}:74) 40",
                    f"{PROC};{POOL} 200"])                                # a pool thread
    oncpu = _stacks([f"{PROC};{LOOP};predict ({APP}:166) 9",
                     f"{PROC};{LOOP};predict ({APP}:170);TreePredictor.predict ({SK}:74) 35",
                     f"{PROC};{POOL} 3"])
    (lf,) = loop_facts(oncpu, wall, expected_ticks=200)
    assert (lf.pid, lf.view, lf.ticks, lf.busy) == (10, "wall", 200, 44)
    # the sleeping line: 120 wall, 9 on-CPU -> 111 blocked; the computing frame (40 wall,
    # 35 on-CPU: a contended machine's noise) is not blocked
    assert lf.blocked == 111 and lf.blockers == ((f"predict ({APP}:166)", 111),)
    assert lf.blocked_share == pytest.approx(0.555) and lf.idle_share == pytest.approx(0.225)


def test_loop_facts_without_a_wall_view_count_busy_ticks_only():
    oncpu = _stacks([f"{LOOP};predict ({APP}:170) 50", f"{LOOP} 30", f"{POOL} 10"])
    (lf,) = loop_facts(oncpu, None, expected_ticks=200)
    assert (lf.pid, lf.view, lf.ticks, lf.busy, lf.blocked) == (None, "oncpu", 200, 50, None)
    assert lf.busy_share == 0.25 and lf.blocked_share is None
    # a gunicorn sync worker has no event loop
    assert loop_facts(_stacks([f"{POOL} 10", f"handle ({APP}:3) 5"]), None, 100) == []
    with pytest.raises(ValueError, match="must be >= 0"):
        LoopFacts(1, "wall", -1, 0, 0)


def test_own_code_is_outside_site_packages_and_the_standard_library():
    assert is_own_code("/srv/svc/app.py") and is_own_code("examples/app.py")
    assert not is_own_code(SK) and not is_own_code("/usr/lib/python3.11/json/encoder.py")
    assert not is_own_code("<frozen runpy>") and not is_own_code(None)


# -- evidence ---------------------------------------------------------------------------------

def test_evidence_line_names_what_was_used_and_how_to_add_the_rest():
    ev = Evidence(frozenset({"client", "resources", "profile"}), "python_web")
    text, data = evidence_line(ev, ("profile", "resources", "profile_wall"))
    assert data == {"used": ["client", "profile", "resources"],
                    "missing": ["server_timing", "traces", "profile_wall"]}
    assert text.startswith("evidence: client histograms, profile (python_web stage map), "
                           "process CPU (psutil); not in this run: Server-Timing stages")
    assert "harness run --profile-wall" in text
    traced = Evidence(frozenset({"client", "traces"}))
    assert evidence_line(traced, ("stages",))[1] == {"used": ["client", "traces"],
                                                     "missing": ["profile", "resources"]}
    assert traced.stage_label == "traces" and traced.stages == "traces"
    with pytest.raises(ValueError, match="evidence kinds must be among"):
        Evidence(frozenset({"gpu"}))


def test_every_finding_outside_measurement_says_its_rule_and_evidence():
    findings = diagnose_facts(_svc(processes=[ProcessFacts(10, "service_master", 97.0, 100.0,
                                                           UVICORN)]))
    sat = next(f for f in findings if f.data["rule"] == "cpu_saturation")
    assert sat.evidence[-1].startswith("evidence: client histograms, process CPU (psutil), "
                                       "profile (python_web stage map); not in this run:")
    assert sat.data["evidence"]["missing"] == ["server_timing", "traces"]
    assert all("rule" in f.data for f in findings)


def test_a_run_with_client_latency_only_says_it_cannot_localize():
    f = Facts(run_id="r", requests=500, client=_client(5.0, 9.0, n=500))
    (found,) = [x for x in diagnose_facts(f) if x.data["rule"] == "cannot_localize"]
    assert found.layer == "measurement" and found.severity == "info"
    assert found.title == ("client latency only: the harness cannot localize the time in "
                           "this run")
    assert "to localize: send a Server-Timing header" in found.next_steps
    assert "to localize: drop --no-profile" in found.next_steps
    with_cpu = measurement.cannot_localize(replace(f, service_cpu_mean_pct=20.0))
    assert with_cpu is not None and with_cpu.title.startswith(
        "client latency and the service's CPU (psutil):")
    assert measurement.cannot_localize(_svc()) is None  # a profile localizes
    d = Diagnosis("r", None, diagnose_facts(f))
    assert d.primary is None  # nothing localizes: no answer rather than a guess


def test_the_model_versions_record_is_never_the_answer():
    d = Diagnosis("r", None, diagnose_facts(Facts(run_id="r", requests=500,
                                                  client=_client(5.0, 9.0, n=500),
                                                  model_versions={"eta": "v1"})))
    assert [f.data["rule"] for f in d.findings if f.layer == "model"] == ["model_versions"]
    assert d.primary is None


# -- saturation without Server-Timing ---------------------------------------------------------

def test_one_uvicorn_process_at_a_full_core_while_the_users_wait_is_saturated():
    f = _svc(model="closed", users=8, achieved_rps=200.0, client=_client(35.0, 90.0, 38.0),
             processes=[ProcessFacts(10, "service_master", 96.0, 100.0, UVICORN)],
             service_cpu_mean_pct=96.0)
    found = processes.cpu_saturation(f)
    assert found is not None and found.severity == "critical"
    assert found.title == ("the service is saturated: one uvicorn process serves every "
                           "request (one event loop, one core at most); too few workers for "
                           "the load, requests queue")
    # Little's law: 8 users / 200 req/s = 40 ms per cycle, of which 38 ms waiting
    assert any("8 users / 200.0 req/s = 40.000 ms per user cycle; the mean latency 38.000 ms "
               "is 95.0 % of it" in e for e in found.evidence)
    assert any("200.0 req/s x 4.80 ms of CPU per request" in e for e in found.evidence)
    assert found.data["by"] == "cpu" and service_saturated(f)
    # users that mostly think do not wait for the service: Little's law says so
    thinking = replace(f, client=_client(8.0, 20.0, 8.0))
    assert processes.cpu_saturation(thinking) is None


def test_mlserver_without_parallel_workers_on_a_crowded_machine_is_named():
    mls = "/venv/bin/python /venv/bin/mlserver start ."
    f = _svc(model="closed", users=8, achieved_rps=85.0, client=_client(89.0, 200.0, 94.0),
             processes=[ProcessFacts(4375, "service_master", 47.0, 70.0, mls)],
             profile=_profile(loops=(_loop(0.92, 0.04, pid=4375),)),
             system_cpu_mean_pct=100.0, machine_share={"service": 0.24, "loadgen": 0.02})
    found = processes.cpu_saturation(f)
    assert found is not None and found.severity == "warning"  # the machine starves it
    assert "MLServer runs the model in its main process (parallel workers off)" in found.title
    assert any("event loop busy 92.0 % of the time" in e for e in found.evidence)
    assert any("the machine's other processes took the rest" in e for e in found.evidence)
    # the same, once requests fail: it is decisive
    failing = replace(f, failures=100)
    assert processes.cpu_saturation(failing).severity == "critical"  # type: ignore[union-attr]


def test_a_busy_but_not_saturated_service_and_idle_helpers():
    assert processes.cpu_saturation(_svc()) is None
    tracker = "/venv/bin/python -c from multiprocessing.resource_tracker import main;main(5)"
    procs = [ProcessFacts(1, "service_master", 20.0), ProcessFacts(2, "service_worker", 0.0,
                                                                   0.0, tracker, True),
             ProcessFacts(3, "service_worker", 90.0)]
    f = _svc(processes=procs, profile=None)
    assert processes.cpu_saturation(f) is not None  # the one real worker is at a full core
    assert "its one worker process serves every request" in processes.cpu_saturation(f).title


def test_the_resource_tracker_is_no_worker_to_balance():
    # MLServer with parallel workers: the tracker (0.0 % of a core) beside one worker at 81 %
    f = _svc(workers=[WorkerFacts(9108, 0.0, 0.0, 0.0), WorkerFacts(9109, 81.3, 95.0, 0.3)],
             processes=[ProcessFacts(9108, "service_worker", 0.0),
                        ProcessFacts(9109, "service_worker", 81.3)])
    assert [w.pid for w in active_workers(f)] == [9109]
    assert worker_imbalance(f) is None
    two = replace(f, workers=[WorkerFacts(1, 90.0, 95.0, 0.5), WorkerFacts(2, 10.0, 20.0, 0.0)],
                  processes=[])
    assert worker_imbalance(two) is not None  # two real workers, one doing 90 %


# -- the event loop blocked -------------------------------------------------------------------

def test_a_blocked_event_loop_is_critical_and_names_the_line():
    frame = f"predict ({APP}:166)"
    f = _svc(profile=_profile(loops=(LoopFacts(10, "wall", 138, 22, 118, ((frame, 118),)),)))
    found = processes.event_loop_blocked(f)
    assert found is not None and found.severity == "critical"
    assert found.title == ("the event loop is blocked 85.5 % of the time by synchronous "
                           "calls: every request queues behind them")
    assert f"{frame}: 118 samples, 85.5 % of the loop's time (the service's own code" \
        in found.evidence[1]
    assert found.data["frames"] == [frame]
    assert diagnose_facts(f)[0].data["rule"] == "event_loop_blocked"
    lib = "_read_from_socket (/venv/lib/python3.11/site-packages/redis/connection.py:9)"
    warn = _svc(profile=_profile(loops=(_loop(0.3, 0.2, blockers=((lib, 40),)),)))
    found = processes.event_loop_blocked(warn)
    assert found is not None and found.severity == "warning"
    assert "a library called synchronously on the loop" in found.evidence[1]
    assert processes.event_loop_blocked(_svc()) is None  # 2 % blocked: noise
    # an on-CPU profile cannot see a sleeping thread: no finding, no guess
    assert processes.event_loop_blocked(_svc(profile=_profile(loops=(_loop(0.3),)))) is None


# -- where the CPU goes -----------------------------------------------------------------------

def test_cpu_by_stage_names_the_top_stage_and_warns_for_encoding():
    tops = {"infer": [(f"TreePredictor.predict ({SK})", 40)]}
    found = cpu.cpu_by_stage(_svc(profile=_profile(top_self=tops)))
    assert found is not None and (found.severity, found.layer) == ("info", "model")
    assert found.title == ("where the CPU goes: 'infer' (model) takes 60.0 % of the service's "
                           "on-CPU samples")
    assert found.evidence[0] == ("on-CPU samples by stage (waits excluded, 100 samples): "
                                 "infer 60.0 %, framework 30.0 %")
    assert f"hottest in 'infer': TreePredictor.predict ({SK}) (40)" in found.evidence
    enc = cpu.cpu_by_stage(_svc(profile=_profile({"serialize": 40, "infer": 40,
                                                  "framework": 20})))
    assert enc is not None and (enc.severity, enc.layer) == ("warning", "serialization")
    # with stage times the stage findings speak; too few samples rank nothing
    assert cpu.cpu_by_stage(_svc(stages={"infer": StageFacts("infer", 0.5, 1, 1, 1, 1)})) \
        is None
    assert cpu.cpu_by_stage(_svc(profile=_profile({"infer": 20, "framework": 20}))) is None


def test_the_services_own_hottest_code_is_named():
    own = f"SQLiteStore._fetch ({'/srv/svc/store.py'})"
    f = _svc(profile=_profile({"own_code": 45, "framework": 35, "infer": 20},
                              top_self={"own_code": [(own, 40)], "framework": [("x (y)", 10)]}))
    found = cpu.own_code(f)
    assert found is not None and found.severity == "warning"
    assert found.title == f"the hottest code is the service's own: {own}, 40.0 % of its CPU"
    assert found.evidence[0].startswith(f"{own}: 40 of 100 on-CPU samples as the running "
                                        "(leaf) frame, 40.0 % of the service's CPU, ~1.20 ms")
    assert "py-spy record --native names the library" in found.evidence[1]
    assert found.data == {"function": own, "share": 0.4, "stage": "own_code"}
    # a library function is not the service's own; a small own function is not named
    assert cpu.own_code(_svc(profile=_profile(top_self={"own_code": [(f"f ({SK})", 40)]}))) \
        is None
    small = _profile({"own_code": 5, "infer": 95}, top_self={
        "own_code": [(own, 5)], "infer": [(f"p ({SK})", 60)]})
    assert cpu.own_code(_svc(profile=small)) is None


def test_requests_awaiting_io_with_an_idle_loop():
    # 100 req/s on one loop busy 20 %: 2 ms per request, M/M/1 2.5 ms; latency 25 ms
    f = _svc(client=_client(24.0, 40.0, 25.0), profile=_profile(loops=(_loop(0.2, 0.0),)))
    assert awaited_us(f) == pytest.approx(22500.0)
    found = cpu.awaiting(f)
    assert found is not None and (found.severity, found.layer) == ("info", "upstream")
    assert found.title == ("requests spend ~90.0 % of their latency awaiting I/O: the feature "
                           "store / upstream")
    assert cpu.awaiting(_svc()) is None  # 5 ms latency: nothing awaited worth a finding
    # a front process and its workers are a pipeline: no estimate
    piped = replace(f, processes=[ProcessFacts(10, "service_master", 20.0),
                                  ProcessFacts(11, "service_worker", 50.0)],
                    profile=_profile(loops=(_loop(0.2, 0.0), _loop(0.5, 0.0, pid=11))))
    assert awaited_us(piped) is None
    # MLServer with parallel workers off at 32 users: the process at a full core (psutil) while
    # the sampled loop thread showed 44 % busy; the wait is the queue for the CPU, not I/O
    full = replace(f, processes=[ProcessFacts(10, "service_master", 99.7, 100.0, UVICORN)],
                   profile=_profile(loops=(_loop(0.44, 0.0),)))
    assert awaited_us(full) == 0.0 and cpu.awaiting(full) is None


# -- the client's tail ------------------------------------------------------------------------

def test_the_client_tail_from_saturation_is_queueing():
    f = _svc(model="closed", users=8, achieved_rps=200.0, client=_client(17.0, 439.0, 40.0),
             processes=[ProcessFacts(10, "service_master", 96.0, 100.0, UVICORN)])
    found = tail.client_tail(f)
    assert found is not None and (found.severity, found.layer) == ("warning", "infrastructure")
    assert found.title == "the client's tail: p99 25.8x its p50, from queueing in a saturated " \
                          "service"
    assert found.data["cause"] == "queueing"


def test_the_client_tail_from_one_request_name_or_the_machine():
    by_class = {"request:home": (600, 18), "request:order": (1400, 2)}
    f = _svc(client=_client(5.0, 40.0), tail_by_class=by_class)
    found = tail.client_tail(f)
    assert found is not None and found.data["cause"] == "class"
    assert "'home' holds 90.0 % of the requests above the client p99 with 30.0 % of the " \
           "traffic" in found.evidence[1]
    crowded = _svc(client=_client(5.0, 40.0), system_cpu_mean_pct=100.0,
                   machine_share={"service": 0.1, "loadgen": 0.05})
    assert tail.client_tail(crowded).severity == "info"  # type: ignore[union-attr]
    unknown = tail.client_tail(_svc(client=_client(5.0, 40.0)))
    assert unknown is not None and unknown.data["cause"] == "unknown"
    assert "nothing in this run's evidence coincides with it" in unknown.title
    assert tail.client_tail(_svc(client=_client(5.0, 20.0))) is None  # 4x: no tail
    assert tail.client_tail(_svc(client=_client(5.0, 40.0, n=200))) is None  # p99 unbounded


# -- trace-derived stages ---------------------------------------------------------------------

def test_trace_derived_stages_with_their_server_total(tmp_path: Path):
    rng = np.random.default_rng(1)
    fetch = rng.integers(800, 1200, 2000)
    infer = rng.integers(1800, 2200, 2000)
    server = fetch + infer + 600
    rd = make_run(tmp_path / "run", {("client", "POST /predict", None): server + 900,
                                     ("stage", "POST /predict", "fetch"): fetch,
                                     ("stage", "POST /predict", "infer"): infer,
                                     ("stage", "POST /predict", "server"): server,
                                     ("residual", "POST /predict", None): np.full(2000, 900)})
    index = json.loads((rd.path / "latency" / "series.json").read_text())
    for e in index["series"]:
        if e["metric"] in ("stage", "residual"):
            e["source"] = "traces"
            if e.get("stage") == "server":
                e["total"] = True
    (rd.path / "latency" / "series.json").write_text(json.dumps(index))
    f = extract_facts(type(rd)(rd.path))
    assert f.app is not None and f.app.name == "server" and set(f.stages) == {"fetch", "infer"}
    assert "stage:app" in f.histograms and f.evidence.stages == "traces"
    share = next(x for x in diagnose_facts(f) if x.data.get("stage") == "infer")
    assert "(traces)" in share.evidence[0]
