"""Open-model pacing: an arrival schedule independent of responses.

In the open model (``rate`` requests/s) the load does not wait for the service: task
starts are scheduled in advance (constant or Poisson inter-arrival, seeded), and the
users are only a pool that carries the schedule. Every user task invocation claims the
next intended start time, sleeps until it, and runs; ``lateness = actual start -
intended start`` is recorded. A request's coordinated-omission corrected latency is its
measured response time plus the lateness of the task that sent it (wrk2's and MLPerf
LoadGen's definition: latency counted from the intended start).

:class:`ArrivalSchedule` (harness/load/schedule.py) is pure. :class:`OpenModelPacer` wraps the user
classes' tasks so an unchanged locustfile runs paced; it runs inside the driver
subprocess only (it imports Locust).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import gevent
from locust import TaskSet, User, constant
from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

from harness.load.recorder import LatencyRecorder
from harness.load.schedule import ARRIVALS, ArrivalSchedule
from harness.rundir import clock

__all__ = ["ARRIVALS", "LATENESS_ATTR", "ArrivalSchedule", "OpenModelPacer"]

LATENESS_ATTR = "harness_lateness_us"  # set on the running user greenlet during a paced task
#: The event loop's timers wake up to ~1 ms late (libev waits in epoll with millisecond
#: resolution): on this project's 2-core machine a plain gevent.sleep to the intended start
#: woke 0.75 ms late at the median and > 1 ms late for 29 % of starts at 40 req/s. So the
#: pacer sleeps until SPIN_S before the start and yields (gevent.sleep(0)) until it: the
#: median became 2 µs, > 1 ms 15 % (the rest is the OS scheduling a busy machine), for
#: ~250 µs of CPU per start. Only up to SPIN_MAX_RATE starts/s per process: above it the
#: loop is busy with responses anyway and the spin's CPU would be a visible cost.
SPIN_S = 0.001
SPIN_MAX_RATE = 200.0


class OpenModelPacer:
    """Paces the tasks of Locust user classes by an :class:`ArrivalSchedule`."""

    def __init__(
        self,
        schedule: ArrivalSchedule,
        recorder: LatencyRecorder,
        *,
        load_end: float,
        late_threshold_us: int = 1000,
    ) -> None:
        if late_threshold_us < 0:
            raise ValueError(f"late_threshold_us must be >= 0 (got {late_threshold_us!r})")
        self.schedule = schedule
        self.recorder = recorder
        self.load_end = load_end
        self.late_threshold_us = late_threshold_us
        self.lateness = recorder.series("lateness", "*")
        self.lateness_loop = recorder.series("lateness_loop", "*")
        self.started = 0  # intended in the measured window and started
        self.late = 0  # of those, started more than late_threshold_us late
        self.late_loop = 0  # ... of which by the load generator's own loop (see wait_turn)
        self.spin_s = SPIN_S if schedule.rate <= SPIN_MAX_RATE else 0.0
        self._wrapped: dict[Any, Any] = {}

    # -- wrapping -------------------------------------------------------------------------
    def wrap_user_classes(self, user_classes: list[type[User]]) -> None:
        """Pace every task (nested TaskSets too) and force ``wait_time`` to 0.

        The classes are changed in place: they live only in this driver process."""
        for cls in user_classes:
            self._wrap_container(cls)

    def _wrap_container(self, cls: type[Any]) -> None:
        if getattr(cls, "_harness_paced", False):
            return
        cls.wait_time = constant(0)
        cls.tasks = [self._wrap_task(t) for t in cls.tasks]
        cls._harness_paced = True

    def _wrap_task(self, task: Any) -> Any:
        if task in self._wrapped:
            return self._wrapped[task]
        if isinstance(task, type) and issubclass(task, TaskSet):
            # A nested TaskSet runs its own loop: pace its leaf tasks, not its entry.
            self._wrap_container(task)
            wrapped = task
        else:
            wrapped = self._paced(task)  # type: ignore[assignment]
        self._wrapped[task] = wrapped
        return wrapped

    def _paced(self, task: Callable[..., Any]) -> Callable[..., Any]:
        pacer = self

        @functools.wraps(task)
        def paced(parent: Any, *args: Any, **kwargs: Any) -> Any:
            pacer.wait_turn(parent.user if isinstance(parent, TaskSet) else parent)
            try:
                return task(parent, *args, **kwargs)
            finally:
                setattr(gevent.getcurrent(), LATENESS_ATTR, 0)

        return paced

    # -- the schedule ---------------------------------------------------------------------
    def wait_turn(self, user: User) -> None:
        """Claim the next intended start, sleep until it, record lateness and its cause.

        A user claims the next start when it becomes free. If that start is already past,
        no user was free at it: every one was busy with a request (the service is slower
        than the pool covers) or asleep on an earlier start. That part of the lateness is
        the *pool's* wait, which the corrected latency rightly charges to the service. The
        rest (waking up late from the sleep: the event loop busy, its timer's resolution,
        the process short of CPU, a locustfile blocking the loop) is the *loop's*: the load
        generator's own, recorded apart (``lateness_loop``) so the self-check can say when
        it distorts the numbers. A late start's cause is the larger of the two.
        """
        claimed = clock.now()
        intended = self.schedule.claim()
        if intended >= self.load_end:
            # Nothing left to do in this run: wait, killable, until the driver stops us.
            self._sleep(user, math.inf)
        delay = intended - clock.now()
        if delay > self.spin_s:
            self._sleep(user, delay - self.spin_s)
        if self.spin_s and clock.now() < intended:
            self._spin(user, intended)
        now = clock.now()
        lateness_us = max(0, round((now - intended) * 1e6))
        pool_us = min(lateness_us, max(0, round((claimed - intended) * 1e6)))
        loop_us = lateness_us - pool_us
        rec = self.recorder
        if now >= rec.roll_at:
            rec.roll(now)
        self.lateness.record(lateness_us)
        self.lateness_loop.record(loop_us)
        self._count(lateness_us > self.late_threshold_us, loop_us > pool_us,
                    intended >= self.schedule.measure_start)
        setattr(gevent.getcurrent(), LATENESS_ATTR, lateness_us)

    def _count(self, late: bool, by_loop: bool, measured: bool) -> None:
        counts = self.recorder.counts
        counts.started += 1
        if late:
            counts.late += 1
            counts.late_loop += by_loop
        if measured:
            self.started += 1
            if late:
                self.late += 1
                self.late_loop += by_loop

    @staticmethod
    def _sleep(user: User, seconds: float) -> None:
        # Marked as waiting like Locust's own wait(): a stopping runner kills the user
        # here instead of letting it start a task after the end.
        if user._state == LOCUST_STATE_STOPPING:
            raise StopUser()
        user._state = LOCUST_STATE_WAITING
        if math.isinf(seconds):
            gevent.sleep(3600 * 24 * 365)
        else:
            gevent.sleep(seconds)
        if user._state == LOCUST_STATE_STOPPING:
            raise StopUser()
        user._state = LOCUST_STATE_RUNNING

    @staticmethod
    def _spin(user: User, until: float) -> None:
        """Yield to the other greenlets until ``until`` (the last ~1 ms before a start)."""
        if user._state == LOCUST_STATE_STOPPING:
            raise StopUser()
        user._state = LOCUST_STATE_WAITING
        while clock.now() < until:
            gevent.sleep(0)
        if user._state == LOCUST_STATE_STOPPING:
            raise StopUser()
        user._state = LOCUST_STATE_RUNNING

    def interval_counts(self, k: int, end: float) -> dict[str, int]:
        """For ``LatencyRecorder(interval_hook=…)``: intended starts in interval ``k``."""
        return {"scheduled": self.schedule.take_scheduled(k, end)}

    def window(self, end: float, threshold_us: int | None = None) -> dict[str, int]:
        """Measured-window totals: scheduled, started, late, dropped (until ``end``)."""
        sched = max(0, self.schedule.scheduled_before(end) - self.schedule.before_measure)
        if end <= self.schedule.measure_start:
            sched = 0
        return {"scheduled": sched, "started": self.started, "late": self.late,
                "late_loop": self.late_loop, "dropped": max(0, sched - self.started)}
