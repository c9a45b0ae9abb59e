"""The open model's arrival schedule: intended start times, independent of responses.

Pure (no Locust, no gevent), so it is tested by value in the main test process.
A constant rate, or a load shape (``rate_fn``: requests/s at t seconds into the load,
from scenarios/shapes.py) for step, ramp, spike, soak and diurnal arrival rates.

The schedule is read twice, in step with nobody: the users claim intended times as they
start tasks, the recorder counts them per interval as the intervals close. Two streams
draw the same times from the same seed, one for each reader, so neither keeps what the
other has not read yet: a service that falls behind a high rate no longer grows a queue
of pending times (at 100,000 req/s against a slow target: ~3 MB a second).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable

from harness.rundir import clock

__all__ = ["ARRIVALS", "ArrivalSchedule"]

ARRIVALS = ("poisson", "constant")


class _Stream:
    """One reader's walk through the schedule: the times in order, from the seed."""

    __slots__ = ("schedule", "rng", "i", "last")

    def __init__(self, schedule: ArrivalSchedule, seed: int) -> None:
        self.schedule = schedule
        self.rng = random.Random(seed)
        self.i = 0
        self.last = schedule.start

    def next(self) -> float:
        s = self.schedule
        if s.rate_fn is not None:
            t = self._shaped()
        elif s.arrival == "constant":
            # From the index, not by accumulation: no float drift over long runs.
            t = s.start + self.i / s.rate
        else:
            t = self.last + self.rng.expovariate(s.rate)
        self.i += 1
        self.last = t
        return t

    def _shaped(self) -> float:
        """A time-varying rate: Poisson by thinning (candidates at the peak rate, each kept
        with probability rate(t) / peak), constant by stepping 1 / rate(t)."""
        s = self.schedule
        assert s.rate_fn is not None
        t = self.last
        give_up = t + 3600.0  # a rate of 0 from here on: an arrival no run reaches
        while t < give_up:
            if s.arrival == "constant":
                r = min(s.rate, max(0.0, s.rate_fn(t - s.start)))
                if r > 0:
                    return t + 1.0 / r if self.i else t
                t += min(0.01, 1.0 / s.rate)  # a stretch at rate 0: step over it
                continue
            t += self.rng.expovariate(s.rate)
            if self.rng.random() * s.rate < s.rate_fn(t - s.start):
                return t
        return t


class ArrivalSchedule:
    """Intended start times from ``start`` on: ``rate``/s, constant or Poisson (seeded).

    Also counts intended times per interval (``scheduled``) and inside the measured
    window, so the driver can report what was asked of it, not only what happened.
    """

    def __init__(
        self,
        rate: float,
        arrival: str = "poisson",
        seed: int = 1,
        start: float = 0.0,
        *,
        interval_s: float = 1.0,
        measure_start: float | None = None,
        rate_fn: Callable[[float], float] | None = None,
    ) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be > 0 (got {rate!r})")
        if arrival not in ARRIVALS:
            raise ValueError(f"arrival must be one of {ARRIVALS} (got {arrival!r})")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 (got {interval_s!r})")
        self.rate = float(rate)
        # A load shape: the rate at t seconds after start; ``rate`` is then its peak.
        self.rate_fn = rate_fn
        self.arrival = arrival
        self.start = float(start)
        self.interval_s = float(interval_s)
        self.measure_start = self.start if measure_start is None else float(measure_start)
        self._claims = _Stream(self, seed)  # what the users start
        self._counts = _Stream(self, seed)  # what the intervals count: the same times
        self._recent: deque[float] = deque()  # counted, not older than the last trim
        self.generated = 0  # counted so far
        self.before_measure = 0
        self.scheduled_by_k: dict[int, int] = {}

    def _count(self) -> float:
        t = self._counts.next()
        self.generated += 1
        if t < self.measure_start:
            self.before_measure += 1
        k = int((t - self.start) // self.interval_s)
        self.scheduled_by_k[k] = self.scheduled_by_k.get(k, 0) + 1
        self._recent.append(t)
        return t

    def claim(self) -> float:
        """The next intended start time (each is handed out once)."""
        return self._claims.next()

    def extend_to(self, t: float) -> None:
        """Count every intended time before ``t``."""
        while self._counts.last < t or self.generated == 0:
            self._count()

    def take_scheduled(self, k: int, end: float) -> int:
        """Intended times in interval ``k`` (ending at ``end``); call once per interval."""
        self.extend_to(end)
        recent = self._recent
        # Keep times after "now" even when the interval is a partial last one:
        # scheduled_before(stop time) still needs them.
        keep_from = min(end, clock.now())
        while recent and recent[0] < keep_from:
            recent.popleft()
        return self.scheduled_by_k.pop(k, 0)

    def scheduled_before(self, t: float) -> int:
        """Intended times before ``t`` (``t`` no earlier than the last closed interval)."""
        self.extend_to(t)
        return self.generated - sum(1 for x in self._recent if x >= t)
