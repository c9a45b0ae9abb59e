"""Diagnosis without Server-Timing against a baseline, and the rules that the evidence of an
async service changes (issue 18): constructed facts, checked by value."""

from __future__ import annotations

from dataclasses import replace

from test_diagnose_anysvc import _client, _hist, _ids, _loop, _profile, _svc

from harness.analysis.diagnosis import inputs, stages
from harness.analysis.diagnosis.change import change_rules
from harness.analysis.diagnosis.facts import Finding, ProcessFacts, StageFacts
from harness.analysis.diagnosis.measures import overloaded

# -- changes without stage times --------------------------------------------------------------

def _pair(run_kw: dict, base_kw: dict, run_ms: tuple[int, int] = (25, 40)) -> list[Finding]:
    """A run against a baseline whose client median was 5 ms (p99 9 ms); the run's median
    and tail as given (ms)."""
    hist = {"client": _hist([5000] * 900 + [9000] * 100)}
    slow = {"client": _hist([run_ms[0] * 1000] * 900 + [run_ms[1] * 1000] * 100)}
    return change_rules(_svc(histograms=slow, **run_kw), _svc(histograms=hist, **base_kw))


def test_more_cpu_per_request_is_named_by_the_profile_stage_that_grew():
    found = _pair({"service_cpu_mean_pct": 60.0,
                   "profile": _profile({"infer": 80, "framework": 15, "fetch": 5})},
                  {"service_cpu_mean_pct": 30.0})
    (cpu_f,) = [f for f in found if f.data["rule"] == "cpu_growth"]
    # 3.0 -> 6.0 ms per request; infer 60 % of 3.0 = 1.8 -> 80 % of 6.0 = 4.8 ms
    assert cpu_f.title == ("CPU per request grew 100 % (3.00 -> 6.00 ms); 'infer' (model) grew "
                           "most: +3.00 ms per request, 100.0 % of the growth")
    assert (cpu_f.severity, cpu_f.data["stage"]) == ("warning", "profile:infer")
    unprofiled = _pair({"service_cpu_mean_pct": 60.0, "profile": None},
                       {"service_cpu_mean_pct": 30.0, "profile": None})
    (cpu_f,) = [f for f in unprofiled if f.data["rule"] == "cpu_growth"]
    assert cpu_f.data["stage"] is None and "does more work per request" in cpu_f.title
    same = _pair({"service_cpu_mean_pct": 36.0}, {"service_cpu_mean_pct": 30.0})
    assert "cpu_growth" not in _ids(same)  # +20 %: within A/A noise


def test_longer_waits_with_an_idle_loop_point_at_the_awaited_io():
    found = _pair({"client": _client(24.0, 40.0, 25.0)}, {"client": _client(4.0, 9.0, 4.5)})
    (wait,) = [f for f in found if f.data["rule"] == "awaiting_growth"]
    assert (wait.severity, wait.data["stage"]) == ("warning", "profile:fetch")
    # run: 25 ms - 3.2 / (1 - 0.32) = 20.294 ms awaited; baseline 4.5 ms: none
    assert "requests wait longer with the event loop idle (+20.294 ms per request)" \
        in wait.title and wait.title.endswith("the awaited I/O in its profile is 'fetch' "
                                              "(upstream)")
    # a busier machine: the loop's busy share grows with the latency, nothing is awaited
    drift = _pair({"client": _client(9.0, 20.0, 9.0), "profile": _profile(
        loops=(_loop(0.5, 0.02),))}, {"client": _client(4.0, 9.0, 4.5)})
    assert "awaiting_growth" not in _ids(drift)
    # the tail grew, the median hardly: bursts outside the service, not a slower dependency
    tail_only = _pair({"client": _client(24.0, 40.0, 25.0)}, {"client": _client(4.0, 9.0, 4.5)},
                      run_ms=(7, 300))
    assert "awaiting_growth" not in _ids(tail_only)



def _traced(run_kw: dict, base_kw: dict, fetch_ms: tuple[float, float]) -> list[Finding]:
    """An async service with trace-derived stages whose awaited 'fetch' p50 grew."""
    st = {"fetch": StageFacts("fetch", 0.3, fetch_ms[1] * 1000, int(fetch_ms[1] * 1000),
                              int(fetch_ms[1] * 3000), 900)}
    base_st = {"fetch": replace(st["fetch"], mean_us=fetch_ms[0] * 1000,
                                p50_us=int(fetch_ms[0] * 1000))}

    def hists(client_ms: int, fetch: float) -> dict:
        return {"client": _hist([client_ms * 1000] * 900 + [client_ms * 2000] * 100),
                "stage:fetch": _hist([int(fetch * 1000)] * 900 + [int(fetch * 3000)] * 100)}
    run = _svc(stages=st, histograms=hists(30, fetch_ms[1]), **run_kw)
    base = _svc(stages=base_st, histograms=hists(5, fetch_ms[0]), **base_kw)
    return change_rules(run, base)


def test_an_awaited_stage_that_grew_with_the_cpu_is_the_loops_wait_not_the_stores():
    # the fetch span (2 % on-CPU: awaited) grew most at the tail, while the CPU per request
    # doubled in 'serialize': the loop resumes the awaits late, the encoder is the cause
    run_profile = _profile({"serialize": 60, "infer": 25, "framework": 15, "fetch": 0},
                           loops=(_loop(0.6, 0.02),))
    found = _traced({"service_cpu_mean_pct": 60.0, "profile": run_profile},
                    {"service_cpu_mean_pct": 30.0}, (2.0, 20.0))
    (growth,) = [f for f in found if f.data["rule"] == "growth"]
    assert growth.data["stage"] == "profile:serialize" and growth.data["via"] == "event loop"
    assert "mostly in awaited 'fetch' (+" in growth.title
    assert growth.title.endswith("behind it the CPU per request grew: 'serialize' "
                                 "(serialization) +3.45 ms")  # 0.05 x 3.0 -> 0.6 x 6.0
    # the same growth with no more CPU and a loop that is not saturated: the store's
    plain = _traced({}, {}, (2.0, 20.0))
    (growth,) = [f for f in plain if f.data["rule"] == "growth"]
    assert growth.data["stage"] == "stage:fetch" and growth.data["via"] is None


def test_an_open_model_schedule_the_service_did_not_keep_up_with():
    f = _svc(target_rps=500.0, achieved_rps=250.0, scheduled=4000, dropped=2800,
             failures=290, errors={"HTTP 503": 34, "CatchResponseError": 256}, profile=None,
             processes=[ProcessFacts(10, "service_master", 45.0, 70.0)])
    assert overloaded(f)
    found = inputs.failures(f)
    assert found is not None and found.severity == "critical" and found.data["saturated"]
    assert found.title == "14.5 % of requests failed under a load the service did not keep up with"
    assert "2800 of 4000 scheduled requests never started" in found.evidence[1]
    assert not overloaded(replace(f, loadgen_saturated_share=0.5))  # the harness's lag
    assert not overloaded(replace(f, achieved_rps=490.0))


def test_an_awaited_stage_of_an_async_service_on_a_crowded_machine_is_information():
    def run(fetch_share: float, oncpu: int) -> list[Finding]:
        app = StageFacts("server", 0.8, 8000, 6000, 30000, 1000)
        fetch = StageFacts("fetch", 0.8 * fetch_share, 8000 * fetch_share, 1500, 20000, 1000)
        prof = _profile({"fetch": oncpu, "framework": 80, "infer": 20},
                        loops=(_loop(0.3, 0.02),))
        return stages.stage_share(_svc(app=app, stages={"fetch": fetch}, profile=prof,
                                       system_cpu_mean_pct=100.0, duration_s=10.0,
                                       machine_share={"service": 0.08, "loadgen": 0.02}))
    (crowded,) = run(0.35, 5)  # 35 % of the service time, 5 samples on-CPU: awaited
    assert crowded.severity == "info"
    assert "resumes only when its starved event loop gets to it" in crowded.evidence[-1]
    assert run(0.7, 5)[0].severity == "warning"  # past half the service time: the store's
