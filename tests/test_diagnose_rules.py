"""The diagnosis rules as pure functions of constructed facts, checked by value."""

from __future__ import annotations

import pytest
from hdrh.histogram import HdrHistogram

from harness.analysis.diagnosis.change import comparability, percentile_delta, tail_delta
from harness.analysis.diagnosis.engine import Diagnosis, diagnose_facts, format_diagnosis, rank
from harness.analysis.diagnosis.facts import (
    Facts,
    Finding,
    ProfileFacts,
    StageFacts,
    TagFacts,
    WorkerFacts,
    stage_layer,
)
from harness.analysis.diagnosis.single import busy_fraction, service_share


def _hist(values: list[int]) -> HdrHistogram:
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in values:
        assert h.record_value(v)
    return h


def _facts(fetch_ms: float = 0.3, infer_ms: float = 6.0, ser_ms: float = 0.2,
           residual_ms: float = 1.0, rps: float = 50.0, **kw) -> Facts:
    app = fetch_ms + infer_ms + ser_ms + 0.3
    client = app + residual_ms
    n = 1000

    def st(name: str, ms: float) -> StageFacts:
        return StageFacts(name, ms / client, ms * 1000, int(ms * 1000), int(ms * 1500), n)

    base = dict(run_id="r", requests=n, achieved_rps=rps, duration_s=20.0, concurrency=2,
                client=StageFacts("client", 1.0, client * 1000, int(client * 1000),
                                  int(client * 2000), n),
                stages={"fetch": st("fetch", fetch_ms), "infer": st("infer", infer_ms),
                        "serialize": st("serialize", ser_ms)},
                app=st("app", app), residual=st("residual", residual_ms),
                loadgen_saturated_share=0.0, system_cpu_mean_pct=40.0,
                machine_share={"service": 0.2, "loadgen": 0.05})
    base.update(kw)
    return Facts(**base)


def _top(f: Facts) -> Finding:
    return diagnose_facts(f)[0]


def test_finding_validates_severity_and_layer():
    with pytest.raises(ValueError, match="severity must be one of"):
        Finding("bad", "model", "t")
    with pytest.raises(ValueError, match="layer must be one of"):
        Finding("info", "gpu", "t")


def test_stage_layer_names():
    assert stage_layer("fetch") == "upstream"
    assert stage_layer("feature_lookup") == "upstream"
    assert stage_layer("infer") == "model"
    assert stage_layer("serialize") == "serialization"
    assert stage_layer("auth") == "infrastructure"


def test_busy_fraction_is_utilization_law():
    f = _facts(rps=100.0)  # app = 6.8 ms, 2 slots: 100 * 0.0068 / 2
    assert busy_fraction(f) == pytest.approx(0.34)
    assert service_share(f, f.stages["infer"]) == pytest.approx(6.0 / 6.8)


def test_clean_run_has_nothing_above_info():
    findings = diagnose_facts(_facts())
    assert findings and all(f.severity == "info" for f in findings)
    assert findings[0].layer == "model"


def test_slow_fetch_is_top_upstream_warning():
    top = _top(_facts(fetch_ms=15.0))
    assert (top.severity, top.layer) == ("warning", "upstream")
    assert top.data["stage"] == "fetch"


def test_bloated_serialization_is_top():
    top = _top(_facts(ser_ms=2.0))  # 2 / 8.6 = 23 % of the service time
    assert (top.severity, top.layer) == ("warning", "serialization")


def test_saturation_is_critical_and_names_the_dominant_stage():
    f = _facts(rps=280.0, residual_ms=200.0)  # 280 * 6.8 ms / 2 = 0.95 busy
    top = _top(f)
    assert (top.severity, top.layer) == ("critical", "infrastructure")
    assert top.data["dominant_stage"] == "infer"
    assert top.data["busy"] == pytest.approx(0.952)


def test_queueing_without_saturation_is_a_warning_on_a_quiet_machine_only():
    f = _facts(rps=200.0, residual_ms=10.0)  # busy 0.68, residual 10 / 16.8
    assert any(x.severity == "warning" and "queueing" in x.title for x in diagnose_facts(f))
    busy_machine = _facts(rps=200.0, residual_ms=10.0, system_cpu_mean_pct=97.0)
    found = diagnose_facts(busy_machine)
    assert [x for x in found if "queueing" in x.title][0].severity == "info"
    machine = [x for x in found if "other processes" in x.title][0]
    assert (machine.severity, machine.layer) == ("warning", "measurement")
    assert machine.data["other"] == pytest.approx(0.72)


def test_loadgen_saturation_and_rate_shortfall():
    f = _facts(loadgen_saturated_share=0.5, loadgen_cpu_mean_pct=97.0, model="open",
               target_rps=100.0, achieved_rps=50.0)
    found = diagnose_facts(f)
    assert found[0].severity == "critical" and found[0].layer == "measurement"
    assert any("target rate not achieved" in x.title and x.severity == "critical"
               for x in found)


def test_too_few_samples_for_p99():
    f = _facts()
    f.client = StageFacts("client", 1.0, 8000.0, 8000, 16000, 298)
    assert any(x.title == "too few samples for p99: 298" for x in diagnose_facts(f))
    f.client = StageFacts("client", 1.0, 8000.0, 8000, 16000, 299)
    assert not any("too few samples" in x.title for x in diagnose_facts(f))


def test_worker_imbalance_and_memory_growth():
    f = _facts(workers=[WorkerFacts(1, 80.0, 90.0, 0.0), WorkerFacts(2, 10.0, 12.0, 0.0)],
               rss_start_bytes=200 * 2**20, rss_slope_bytes_per_s=2 * 2**20, rss_fit_r2=0.95)
    titles = [x.title for x in diagnose_facts(f)]
    assert any(t.startswith("worker imbalance: pid 1 does 88.9 %") for t in titles)
    assert any(t == "memory grows steadily: 40.0 MiB over the run" for t in titles)


def test_input_class_slow_and_failing():
    tags = [TagFacts("input_class=production", "input_class", "production", 800, 0.8, 0.0,
                     5000, 10000),
            TagFacts("input_class=oversized_batch", "input_class", "oversized_batch", 100, 0.1,
                     0.0, 20000, 60000),
            TagFacts("input_class=null_features", "input_class", "null_features", 100, 0.1,
                     12.0, 5000, 9000)]
    found = diagnose_facts(_facts(tags=tags))
    titles = {x.title for x in found}
    assert "input class oversized_batch is slow: p99 6.0x 'production'" in titles
    assert "input class null_features fails 12.0 % of its requests" in titles
    share = [x for x in found if "of the traffic is not 'production'" in x.title][0]
    assert share.title.startswith("20.0 %")


def test_rank_is_severity_then_score():
    a, b, c = (Finding("info", "model", "a", score=0.9), Finding("warning", "model", "b",
               score=0.1), Finding("warning", "upstream", "c", score=0.5))
    assert [x.title for x in rank([a, b, c])] == ["c", "b", "a"]


def test_a_finding_that_names_no_cause_ranks_after_one_that_does():
    # the FastAPI matrix: "the client's tail: p99 5.7x its p50; nothing in this run's
    # evidence coincides with it" ranked above "feature … arrived null in 58.8 % of rows"
    unexplained = Finding("warning", "infrastructure", "tail", score=0.0,
                          data={"cause": "unknown", "unexplained": True})
    nulled = Finding("warning", "input data", "null feature", score=0.0)
    assert [x.title for x in rank([unexplained, nulled])] == ["null feature", "tail"]
    assert [x.title for x in rank([unexplained, nulled], change_first=True)] == \
        ["null feature", "tail"]


def test_percentile_delta_detects_a_shift_and_not_an_equal_run():
    base = _hist([1000 + i for i in range(2000)])
    same = _hist([1000 + i for i in range(2000)])
    slower = _hist([3000 + i for i in range(2000)])
    assert percentile_delta("client", base, same, 99).verdict == "no significant difference"
    d = percentile_delta("client", base, slower, 99)
    assert d.verdict == "slower" and d.diff_us == pytest.approx(2000, abs=10)
    assert d.low_us <= 2000 <= d.high_us
    small = _hist([1000] * 50)
    assert percentile_delta("client", small, small, 99).verdict == "insufficient data"
    # p99 and p95 cannot be bounded with 50 samples; p90 can: P(Bin(50, .9) = 50) = .0052
    assert tail_delta("client", small, small).percentile == 90.0


def test_change_attributes_growth_to_the_stage_not_the_queue():
    def run(fetch_us: int, residual_us: int) -> Facts:
        f = _facts(fetch_ms=fetch_us / 1000)
        f.histograms = {"client": _hist([7000 + fetch_us + residual_us + i for i in range(600)]),
                        "stage:fetch": _hist([fetch_us + i % 10 for i in range(600)]),
                        "stage:infer": _hist([6000 + i % 10 for i in range(600)]),
                        "residual": _hist([residual_us + i % 10 for i in range(600)])}
        return f
    found = diagnose_facts(run(15000, 9000), baseline=run(300, 1000))
    change = [x for x in found if x.layer == "change"][0]
    assert change.severity == "warning" and change.data["stage"] == "stage:fetch"
    assert found[0] is change


def test_growth_spread_over_every_stage_blames_none():
    # every stage grew by a little (as between runs on a slower machine): the one that grew
    # most explains 20 % of the growth, under CAUSE_SHARE: information, ranked last
    def run(each_us: int) -> Facts:
        f = _facts()
        f.histograms = {"client": _hist([5 * each_us + i for i in range(600)]),
                        "stage:fetch": _hist([each_us + i % 10 for i in range(600)]),
                        "stage:infer": _hist([each_us + 5 + i % 10 for i in range(600)]),
                        "stage:serialize": _hist([each_us + 3 + i % 10 for i in range(600)]),
                        "residual": _hist([each_us + 1 + i % 10 for i in range(600)])}
        return f
    found = diagnose_facts(run(2000), baseline=run(1000))
    change = [x for x in found if x.layer == "change" and x.data.get("spread") is not None][0]
    assert change.severity == "info" and change.data["spread"] is True
    assert change.score == 0.0
    assert "spread over the stages: none explains 25 % of it ('fetch' grew most, 20 %)" \
        in change.title


def test_comparability_problems_are_a_finding_not_a_crash():
    a, b = _facts(users=4, scenario_sha256="aa"), _facts(users=8, scenario_sha256="bb")
    assert len(comparability(a, b)) == 2
    found = diagnose_facts(b, baseline=a)
    assert any("not comparable" in x.title for x in found)


def test_format_lists_every_finding():
    d = Diagnosis("r", None, diagnose_facts(_facts(fetch_ms=15.0)))
    lines = format_diagnosis(d)
    assert lines[0] == "diagnosis of r"
    assert any("[upstream] feature fetch" in ln for ln in lines)
    assert d.to_dict()["findings"][0]["layer"] == "upstream"


def _queued(infer_us: int, residual_us: int, **kw) -> Facts:
    """A run whose client time is infer + a queue in front of the service."""
    f = _facts(infer_ms=infer_us / 1000, **kw)
    f.histograms = {"client": _hist([infer_us + residual_us + 500 + i for i in range(600)]),
                    "stage:app": _hist([infer_us + 500 + i % 10 for i in range(600)]),
                    "stage:fetch": _hist([300 + i % 10 for i in range(600)]),
                    "stage:infer": _hist([infer_us + i % 10 for i in range(600)]),
                    "residual": _hist([residual_us + i % 10 for i in range(600)])}
    return f


def test_queueing_growth_names_the_stage_behind_the_service_time():
    # infer +9 ms made the service slower, and the queue in front of it grew +300 ms:
    # infer explains 3 % of the client growth but all of the service time's growth
    found = diagnose_facts(_queued(15_000, 301_000), baseline=_queued(6_000, 1_000))
    change = [x for x in found if x.layer == "change"][0]
    assert change.severity == "warning" and change.data["stage"] == "stage:infer"
    assert change.data["via"] == "residual"
    assert "mostly queueing" in change.title and "'infer' (model)" in change.title
    # a queue that grew while the service did not get slower is queueing itself
    found = diagnose_facts(_queued(6_000, 301_000), baseline=_queued(6_000, 1_000))
    change = [x for x in found if x.layer == "change"][0]
    assert change.data["stage"] == "residual" and change.data["via"] is None


def test_computing_stage_growth_without_more_cpu_on_a_contended_machine_is_info():
    # the run's machine: 95 % busy, other processes 70 %; the service's CPU per request
    # (psutil) 6.0 ms in the baseline, 6.2 ms in the run: infer took longer without doing
    # more work, it waited for a CPU
    # py-spy: infer on-CPU all of its 15 s of wall time (300 samples at 20 Hz): it computes
    computes = ProfileFacts(300, 20.0, 20.0, oncpu={"infer": 300})
    base = _queued(6_000, 1_000, service_cpu_mean_pct=30.0)
    busy = _queued(15_000, 1_000, system_cpu_mean_pct=95.0, service_cpu_mean_pct=31.0,
                   profile=computes)
    found = diagnose_facts(busy, baseline=base)
    change = [x for x in found if x.layer == "change"][0]
    assert change.severity == "info" and change.data["stage"] == "stage:infer"
    assert change.data["machine"] == pytest.approx([6.0, 6.2])
    assert any("CPU per request went 6.0 -> 6.2 ms" in e for e in change.evidence)
    # 14 ms of CPU per request: the service does more work, the growth is its own
    heavier = _queued(15_000, 1_000, system_cpu_mean_pct=95.0, service_cpu_mean_pct=70.0,
                      profile=computes)
    change = [x for x in diagnose_facts(heavier, baseline=base) if x.layer == "change"][0]
    assert change.severity == "warning" and change.data["machine"] is None
    # a stage the profile shows mostly waiting (a sleep in the store) keeps its growth
    waits = _queued(15_000, 1_000, system_cpu_mean_pct=95.0, service_cpu_mean_pct=31.0,
                    profile=ProfileFacts(90, 20.0, 20.0, oncpu={"infer": 90}))
    change = [x for x in diagnose_facts(waits, baseline=base) if x.layer == "change"][0]
    assert change.severity == "warning"
    # a quiet machine: the growth stands whatever the CPU says
    quiet = _queued(15_000, 1_000, service_cpu_mean_pct=31.0, profile=computes)
    change = [x for x in diagnose_facts(quiet, baseline=base) if x.layer == "change"][0]
    assert change.severity == "warning"


def test_failures_of_five_percent_are_critical():
    errors = {"predict fraud|HTTP 503": 50}
    found = diagnose_facts(_facts(failures=50, errors=errors))
    assert (found[0].severity, found[0].layer, found[0].title) == (
        "critical", "infrastructure", "5.0 % of requests failed")
    found = diagnose_facts(_facts(failures=20, errors={"predict fraud|HTTP 503": 20}))
    failed = [x for x in found if x.title.endswith("of requests failed")][0]
    assert failed.severity == "warning"


def test_slow_input_class_is_judged_on_the_service_time():
    # the slow class's requests hold the workers: every class's client p99 is ~1 s, but
    # only extreme_values' own service time is slow
    tags = [TagFacts("input_class=production", "input_class", "production", 300, 0.75, 0.0,
                     200_000, 900_000, 50_000),
            TagFacts("input_class=extreme_values", "input_class", "extreme_values", 100, 0.25,
                     0.0, 380_000, 1_270_000, 1_240_000)]
    slow = [x for x in diagnose_facts(_facts(tags=tags)) if "is slow" in x.title]
    assert [x.title for x in slow] == [
        "input class extreme_values is slow: service time p99 24.8x 'production'"]
    assert "the queue behind the slow class" in slow[0].evidence[1]
    # without the service's timing per class the client p99 decides (1.4x: not slow)
    tags = [TagFacts(t.tag, t.key, t.value, t.count, t.traffic_share, t.fail_pct, t.p50_us,
                     t.p99_us) for t in tags]
    assert not [x for x in diagnose_facts(_facts(tags=tags)) if "is slow" in x.title]


def test_saturation_caused_by_a_slower_stage_ranks_that_stage_first():
    # 120 req/s on 2 workers: 6.8 ms of service time is 41 % busy, 15.8 ms is 95 %
    found = diagnose_facts(_queued(15_000, 301_000, rps=120.0),
                           baseline=_queued(6_000, 1_000, rps=120.0))
    assert found[0].layer == "change" and found[0].severity == "critical"
    assert found[0].data["stage"] == "stage:infer"
    assert any("busy 95 % of the time (baseline 41 %)" in e for e in found[0].evidence)
    assert any(x.title.startswith("the service is saturated") for x in found[1:])


def test_growth_from_a_newly_slow_input_class_names_the_class():
    def tags(extreme_service_us: int) -> list[TagFacts]:
        return [TagFacts("input_class=production", "input_class", "production", 300, 0.75,
                         0.0, 20_000, 60_000, 20_000),
                TagFacts("input_class=extreme_values", "input_class", "extreme_values", 100,
                         0.25, 0.0, 20_000, 60_000, extreme_service_us)]
    found = diagnose_facts(_queued(15_000, 301_000, tags=tags(400_000)),
                           baseline=_queued(6_000, 1_000, tags=tags(21_000)))
    change = [x for x in found if x.layer == "change"][0]
    assert change.data["input_class"] == "input_class=extreme_values"
    assert change.title.endswith("; it comes from input class extreme_values")
    # slow in the baseline already: not what changed
    found = diagnose_facts(_queued(15_000, 301_000, tags=tags(400_000)),
                           baseline=_queued(6_000, 1_000, tags=tags(400_000)))
    assert [x for x in found if x.layer == "change"][0].data["input_class"] is None


def _tailed(per_interval: list[tuple[int, int]], machine: list[tuple[float, float] | None]
            ) -> Facts:
    """Inference with a long tail (p99 8x p50, most of the client p99), on a machine whose
    window mean (66 % system CPU) is under the busy threshold."""
    f = _facts(system_cpu_mean_pct=66.0)
    f.stages["infer"] = StageFacts("infer", 0.8, 7000.0, 6000, 48_000, 1000)
    f.client = StageFacts("client", 1.0, 9000.0, 8000, 50_000, 1000)
    # one-second intervals from t = 1000 s; a None machine entry: no resources sample there
    f.stage_tail_intervals = {"infer": [(1000.0 + k, n, top)
                                        for k, (n, top) in enumerate(per_interval)]}
    f.interval_machine = {1000.0 + k: m for k, m in enumerate(machine) if m is not None}
    return f


def _tail_finding(f: Facts) -> Finding:
    return next(x for x in diagnose_facts(f) if "long tail" in x.title)


def test_a_tail_inside_cpu_bursts_is_the_machines_not_the_models():
    from harness.analysis.diagnosis.single import tail_in_contention

    quiet, burst = (40.0, 0.05), (99.0, 0.45)
    # 10 one-second intervals of 100 values; 2 bursts hold 9 of the 10 values above p99.
    per = [(100, 0)] * 3 + [(100, 5), (100, 4)] + [(100, 0)] * 4 + [(100, 1)]
    machine = [quiet] * 3 + [burst, burst] + [quiet] * 5
    f = _tailed(per, machine)
    assert tail_in_contention(f, "infer") == pytest.approx(0.9)
    found = _tail_finding(f)
    assert found.severity == "info"
    assert "90.0 % of its values above p99 fell in seconds when the machine was busy" \
        in found.evidence[1]
    # The same tail spread over quiet seconds is the model's own: a warning.
    spread = [(100, 1)] * 10
    f = _tailed(spread, machine)
    assert tail_in_contention(f, "infer") is None
    assert _tail_finding(f).severity == "warning"
    # Bursts that hold as large a share of all values as of the tail explain nothing.
    f = _tailed([(100, 1)] * 5 + [(100, 1)] * 5, [burst] * 5 + [quiet] * 5)
    assert tail_in_contention(f, "infer") is None
    # Intervals are matched by their start time: a stage with no values in some second (no
    # line in its interval log) is not shifted against the machine's seconds.
    f = _tailed(per, machine)
    f.stage_tail_intervals["infer"] = [x for x in f.stage_tail_intervals["infer"]
                                       if x[0] != 1001.0]
    assert tail_in_contention(f, "infer") == pytest.approx(0.9)
    # Without per-interval facts (hand-built or old runs) the window mean decides.
    assert _tail_finding(_tailed([], [])).severity == "warning"


def test_one_request_name_slower_while_the_merged_traffic_is_not():
    # the ranking model (a third of the traffic, faster than fraud) gets 1.5 ms slower in
    # inference: the merged p50 and p99 are fraud's and do not move; ranking's p99 grows 42 %
    def run(ranking_infer: int) -> Facts:
        f = _facts()
        per = {}
        for name, infer, n in (("predict fraud", 7000, 1200), ("predict ranking",
                                                                ranking_infer, 600)):
            per[name] = {"client": _hist([infer + 1000 + i for i in range(n)]),
                         "stage:infer": _hist([infer + i for i in range(n)]),
                         "stage:fetch": _hist([300 + i % 10 for i in range(n)])}
        f.by_name = per
        f.histograms = {k: _merged(per["predict fraud"][k], per["predict ranking"][k])
                        for k in per["predict fraud"]}
        return f
    base = run(2000)
    found = diagnose_facts(run(3500), baseline=base)
    hidden = [x for x in found if x.data.get("request")]
    assert [x.data["request"] for x in hidden] == ["predict ranking"]
    (ranking,) = hidden
    assert ranking.severity == "warning" and ranking.data["stage"] == "stage:infer"
    assert ranking.title.startswith("request 'predict ranking' p99 grew 42 % while all "
                                    "traffic together did not (no significant difference)")
    assert "'infer' (model) grew most: +1.500 ms, 100 % of its growth" in ranking.title
    assert found[0] is ranking
    # the per-name lines are in the table of every change as well
    table = [x for x in found if x.title.startswith("percentile changes per series")][0]
    assert any(line.startswith("request 'predict fraud': client p99") and
               "no significant difference" in line for line in table.evidence)
    # the same runs: no per-name finding
    assert not [x for x in diagnose_facts(run(2000), baseline=base) if x.data.get("request")]


def _merged(*hists: HdrHistogram) -> HdrHistogram:
    out = HdrHistogram(1, 3_600_000_000, 3)
    for h in hists:
        out.add(h)
    return out


def test_the_change_finding_names_the_request_where_the_stage_grew_most():
    def run(fraud_infer: int, ranking_infer: int) -> Facts:
        f = _facts()
        per = {name: {"client": _hist([infer + 1000 + i for i in range(800)]),
                      "stage:infer": _hist([infer + i for i in range(800)])}
               for name, infer in (("predict fraud", fraud_infer),
                                   ("predict ranking", ranking_infer))}
        f.by_name = per
        f.histograms = {k: _merged(per["predict fraud"][k], per["predict ranking"][k])
                        for k in per["predict fraud"]}
        return f
    base = run(6000, 6000)
    change = [x for x in diagnose_facts(run(7000, 9000), baseline=base)
              if x.layer == "change"][0]
    assert change.data["stage"] == "stage:infer"
    assert change.title.endswith("; most in request 'predict ranking' (+3.000 ms)")
    assert change.data["most_in_request"] == "predict ranking"
    # grown alike in both (less than 1.5 times more in one): no request is named
    change = [x for x in diagnose_facts(run(8500, 9000), baseline=base)
              if x.layer == "change"][0]
    assert change.data["stage"] == "stage:infer" and change.data["most_in_request"] is None
    assert "most in request" not in change.title


# -- branches: late starts, self-check, model versions, profile function growth ----------

def test_requests_started_late_is_the_load_generators_lag_not_the_services():
    from harness.analysis.diagnosis.single import single_rules as measurement
    from harness.analysis.rules.thresholds import SCHEDULE_DELAY_SHARE as DELAY_SHARE

    late = "requests started late: the load generator lagged its schedule"
    # open model at its target rate, 30 % of the corrected latency spent waiting to start,
    # the workers 34 % busy (100 req/s x 6.8 ms / 2): the generator lagged
    base = dict(model="open", target_rps=100.0, rps=100.0, late=300, started=1000)
    (found,) = [x for x in measurement(_facts(schedule_delay_share=0.3, **base))
                if x.title == late]
    assert (found.severity, found.layer, found.score) == ("warning", "measurement", 0.3)
    assert found.evidence == ["the mean schedule delay is 30.0 % of the corrected latency "
                              f"(limit {100 * DELAY_SHARE:.1f} %); 300 of 1000 late"]
    # at the limit, or a closed model (no schedule), or a saturated service (the users
    # waited for it: the corrected latency is then the truth): no such finding
    for facts in (_facts(schedule_delay_share=DELAY_SHARE, **base),
                  _facts(schedule_delay_share=0.3, **{**base, "model": "closed"}),
                  _facts(schedule_delay_share=0.3, **{**base, "rps": 260.0,
                                                      "target_rps": 260.0})):
        assert not [x for x in measurement(facts) if x.title == late]
    # short of the target rate, the shortfall is the finding instead
    short = measurement(_facts(schedule_delay_share=0.3, **{**base, "rps": 80.0}))
    assert [x.title for x in short if x.layer == "measurement"] == [
        "target rate not achieved: 80.0 of 100 req/s"]


def test_a_failed_self_check_that_invalidates_the_numbers_is_a_warning():
    from harness.analysis.diagnosis.single import single_rules as measurement
    from harness.rundir.records import CheckEntry

    checks = [
        CheckEntry("run_complete", False, "error", "stopped early (SIGTERM)"),
        # a warning only: not a finding
        CheckEntry("negative_residuals", False, "warning", "3 of 1000 requests"),
        # has a rule of its own (loadgen saturation)
        CheckEntry("loadgen_cpu", False, "error", "above 90 %"),
        CheckEntry("out_of_range", True, "info", "none"),
        CheckEntry("measured_data", False, "error", "0 requests in a measured window of 5.0 s"),
    ]
    found = [x for x in measurement(_facts(self_check=checks))
             if x.title.startswith("self-check failed")]
    assert [(x.title, x.severity, x.layer, x.score) for x in found] == [
        ("self-check failed: run_complete", "warning", "measurement", 0.0),
        ("self-check failed: measured_data", "warning", "measurement", 0.0)]
    assert found[0].evidence == ["stopped early (SIGTERM) (summary self-check)"]
    assert found[0].next_steps == ["read the run's summary: harness summary RUN"]


def _versions(run_versions: dict[str, str], infer_us: int) -> Facts:
    f = _facts(model_versions=run_versions)
    f.histograms = {"client": _hist([9000] * 400), "stage:app": _hist([7000] * 400),
                    "stage:infer": _hist([infer_us] * 400)}
    return f


def test_a_model_version_change_is_named_and_warned_when_inference_grew():
    from harness.analysis.diagnosis.change import change_rules

    base = _versions({"fraud": "v1", "churn": "v1"}, 6000)
    same_cost = change_rules(_versions({"fraud": "v2", "churn": "v1", "new": "v1"}, 6000),
                             base)
    (found,) = [x for x in same_cost if x.title.startswith("model version changed")]
    # only the model both runs report, with its versions; no inference growth: information
    assert (found.title, found.severity, found.layer, found.score) == (
        "model version changed: fraud v1 -> v2", "info", "model", 0.0)
    assert found.data == {"versions": {"fraud": ["v1", "v2"]}, "rule": "model_version",
                          "evidence": {"used": ["client", "server_timing"],
                                       "missing": ["profile", "resources"]}}
    assert found.evidence == [
        "run.json target models of both runs",
        "evidence: client histograms, Server-Timing stages; not in this run: profile "
        "(drop --no-profile), process CPU (psutil) (run the service on the load machine, or "
        "let its /metrics export process_*)"]
    # the same change with inference 6 -> 9 ms at every request: a warning, with the delta
    slower = change_rules(_versions({"fraud": "v2", "churn": "v1"}, 9000), base)
    (found,) = [x for x in slower if x.title.startswith("model version changed")]
    assert (found.severity, found.score) == ("warning", 0.5)
    # (400 values a side: p95 is the highest percentile both runs bound)
    assert found.evidence[1].startswith("stage:infer p95: 6.003 ms -> 9.007 ms (+3.004 ms")
    assert not [x for x in change_rules(_versions({"fraud": "v1", "churn": "v1"}, 9000), base)
                if x.title.startswith("model version changed")]


def test_profile_functions_whose_share_grew_are_listed():
    from harness.analysis.diagnosis.change import change_rules

    def run(functions: dict[str, int]) -> Facts:
        f = _facts()
        f.histograms = {"client": _hist([9000] * 400)}
        f.profile = ProfileFacts(sum(functions.values()), 20.0, 20.0, functions=functions)
        return f

    base = run({"predict (m.py)": 100, "encode (j.py)": 850, "lookup (s.py)": 50})
    new = run({"predict (m.py)": 400, "encode (j.py)": 560, "lookup (s.py)": 36, "tiny": 4})
    (found,) = [x for x in change_rules(new, base) if x.title.startswith("profile:")]
    assert (found.title, found.severity, found.layer) == (
        "profile: functions whose share of on-CPU samples grew", "info", "change")
    # 10 % -> 40 %; encode and lookup shrank; "tiny" grew from 0 but has < 10 samples
    assert found.evidence[:-1] == ["predict (m.py): 10.0 % -> 40.0 %"]
    assert found.evidence[-1].startswith("evidence: client histograms, profile; not in this")
    # growth below 5 points of the share is not listed; no profile on one side: no finding
    small = run({"predict (m.py)": 140, "encode (j.py)": 810, "lookup (s.py)": 50})
    assert not [x for x in change_rules(small, base) if x.title.startswith("profile:")]
    assert not [x for x in change_rules(new, _facts(histograms={"client": _hist([9000] * 400)}))
                if x.title.startswith("profile:")]


def test_a_short_stages_on_cpu_ratio_is_unknown_not_waiting():
    """A stage with a few expected profile samples: 0 samples is chance, not "waiting"
    (a clean run on a busy machine got a serialization tail warning this way: 0.1 s of
    serialize at 20 Hz is 2 expected samples)."""
    from harness.analysis.diagnosis.single import oncpu_ratio

    def tailed(count: int) -> Facts:
        f = _facts(system_cpu_mean_pct=97.0)  # others take 72 % of the machine
        f.stages["serialize"] = StageFacts("serialize", 0.05, 500.0, 100, 6000, count)
        f.profile = ProfileFacts(400, 20.0, 20.0, oncpu={"serialize": 0, "infer": 400})
        return f

    short, long = tailed(200), tailed(2000)  # 0.1 s and 1 s of serialize over the run
    assert oncpu_ratio(short, "serialize") is None
    assert oncpu_ratio(long, "serialize") == 0.0  # 20 expected samples, none: it waits
    # a computing stage's tail on a contended machine is the machine's; a waiting one's not
    assert _tail_finding(short).severity == "info"
    assert _tail_finding(long).severity == "warning"


def test_against_a_baseline_a_warning_about_what_did_not_change_is_information():
    from types import SimpleNamespace

    from harness.analysis.diagnosis.deltas import Delta
    from harness.analysis.diagnosis.engine import standing

    grown = Delta("stage:fetch", 99.0, 4000, 9000, 2000, 8000)     # CI above 0: slower
    same = Delta("stage:infer", 99.0, 4000, 4500, -900, 1500)      # CI across 0
    client_same = Delta("client", 95.0, 24351, 23695, -18671, 12847)
    change = SimpleNamespace(tail={"stage:fetch": grown, "stage:infer": same},
                             client=client_same)
    fetch = Finding("warning", "upstream", "fetch tail", data={"rule": "stage_tail",
                                                               "stage": "fetch"})
    infer = Finding("warning", "model", "infer tail", data={"rule": "stage_tail",
                                                           "stage": "infer"})
    # the FastAPI matrix's A/A false alarm: p99 7.2x p50 in one run, 4.9x in the other
    tail_ = Finding("warning", "infrastructure", "the client's tail: p99 7.2x its p50",
                    data={"rule": "client_tail"})
    crit = Finding("critical", "infrastructure", "saturated", data={"rule": "saturation"})
    out = standing([fetch, infer, tail_, crit], [], change, "base")  # type: ignore[arg-type]
    assert [f.severity for f in out] == ["warning", "info", "info", "critical"]
    assert out[1].data["standing"] and "'infer' p99 did not grow significantly" \
        in out[1].evidence[-1]
    assert "the client's p95 did not grow significantly against the baseline (base): no " \
           "significant difference, not what changed" == out[2].evidence[-1]
    # the client's tail grew: a tail with a cause in the run stands
    change.client = Delta("client", 95.0, 9000, 16000, 2000, 9000)
    assert standing([tail_], [], change, "base")[0].severity == "warning"  # type: ignore[arg-type]
    # ... one that nothing in the run explains is information (the third set's A/A pair:
    # p95 5.7 -> 9.9 ms, p99 5.2x p50, no stage grew): most often the machine between runs
    lone = Finding("warning", "infrastructure", "the client's tail: p99 5.2x its p50; "
                   "nothing in this run's evidence coincides with it",
                   data={"rule": "client_tail", "unexplained": True})
    out = standing([lone], [], change, "base")  # type: ignore[arg-type]
    assert out[0].severity == "info" and "most often the machine" in out[0].evidence[-1]
    # the baseline has the same finding: standing whatever the numbers
    out = standing([fetch], [fetch], change, "base")  # type: ignore[arg-type]
    assert out[0].severity == "info" and "has this finding too" in out[0].evidence[-1]
