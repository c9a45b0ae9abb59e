"""The open model's arrival schedule, by value (pure: no Locust in the test process)."""

from __future__ import annotations

import math

import pytest

from harness.load.config import rate_function
from harness.load.schedule import ArrivalSchedule


def counts_per_second(schedule: ArrivalSchedule, seconds: int) -> list[int]:
    times = []
    while True:
        t = schedule.claim()
        if t >= seconds:
            break
        times.append(t)
    return [sum(1 for t in times if k <= t < k + 1) for k in range(seconds)]


def test_constant_rate_is_exact() -> None:
    s = ArrivalSchedule(50, "constant", start=0.0)
    assert counts_per_second(s, 4) == [50, 50, 50, 50]


def test_poisson_rate_mean_and_seed() -> None:
    a = counts_per_second(ArrivalSchedule(200, "poisson", seed=3), 50)
    b = counts_per_second(ArrivalSchedule(200, "poisson", seed=3), 50)
    assert a == b  # same seed, same schedule
    mean = sum(a) / len(a)
    # 10,000 arrivals: the mean count per second is within 4 standard errors of 200.
    assert abs(mean - 200) < 4 * math.sqrt(200 / 50)


def test_constant_ramp_follows_the_shape() -> None:
    fn = rate_function("ramp:from=10,to=50,over=4s,hold=2s")
    s = ArrivalSchedule(50, "constant", rate_fn=fn)
    counts = counts_per_second(s, 6)
    # The rate at the start of each second: 10, 20, 30, 40, then 50 held.
    expected = [10 + 10 * k + 5 for k in range(4)] + [50, 50]
    for got, want in zip(counts, expected, strict=True):
        assert abs(got - want) <= 6, (counts, expected)


def test_poisson_spike_by_thinning() -> None:
    fn = rate_function("spike:base=20,peak=200,at=10s,width=10s,duration=30s")
    counts = counts_per_second(ArrivalSchedule(200, "poisson", seed=5, rate_fn=fn), 30)
    base = counts[:10] + counts[20:]
    spike = counts[10:20]
    assert abs(sum(base) / 20 - 20) < 4 * math.sqrt(20 / 20)
    assert abs(sum(spike) / 10 - 200) < 4 * math.sqrt(200 / 10)


def test_after_the_shape_the_last_level_holds() -> None:
    fn = rate_function("ramp:from=10,to=40,over=2s")
    assert fn is not None
    assert fn(1.0) == pytest.approx(25.0)
    assert fn(100.0) == pytest.approx(40.0, rel=1e-3)
    assert rate_function(None) is None


def test_a_zero_rate_does_not_hang() -> None:
    s = ArrivalSchedule(10, "poisson", rate_fn=lambda t: 0.0)
    assert s.claim() >= 3600.0
