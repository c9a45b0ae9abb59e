"""Replay recorded traffic at its original timing, scaled by a speed factor.

    locust -f scenarios/replay.py --headless -u 50 -H http://127.0.0.1:8000 \
        --replay-file incident.jsonl --speed 2
    SCENARIO_REPLAY_FILE=incident.jsonl harness run scenarios/replay.py --serve reference ...

Request i is sent at ``start + t_i / speed`` (t from the file, harness/replayfile.py),
with its method, path, headers (redacted ones dropped) and exact body, once. The users
(``-u``, else ``--replay-users``) are a pool that carries the schedule: each claims the
next request, waits for its time, sends it; when all of them wait on slow responses the
next request goes out late, and the end-of-run log says how late. The run ends when
every request is answered (a load shape does that, so ``-t`` is only a cap).

Names: the record's ``name``, else ``predict <model>`` for the reference service's paths,
else the path with ids folded. Tags: the record's ``input_class``, else ``replay``. A 4xx
equal to the recorded status is a success with ``outcome=rejected`` (the service refused
it then too); any other status >= 400 is a failure.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # plain `locust -f scenarios/replay.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
from locust import FastHttpUser, LoadTestShape, constant, events, task

from harness.rundir.replay import Replay, ReplayRecord
from scenarios import common
from scenarios.options import REPLAY
from scenarios.traffic import request_name

GROUPS = REPLAY
ENV = common.setup(GROUPS, required=("replay_file",))
LEAD_S = 0.5  # first request this long after the first user starts: all users are up
SPAWN_S = 0.2  # the whole pool is spawned within this, well inside LEAD_S


class ReplayState:
    """The process's schedule: records, the cursor, and what happened to them."""

    def __init__(self, replay: Replay, speed: float):
        self.records = [r for r in replay.records if not r.body_omitted]
        self.omitted = len(replay.records) - len(self.records)
        self.speed = speed
        self.cursor = 0
        self.in_flight = 0
        self.sent = 0
        self.start: float | None = None
        self.lateness_ms: list[float] = []

    def claim(self) -> tuple[ReplayRecord, float] | None:
        """The next record and its due time (epoch s), or None when all are claimed."""
        if self.cursor >= len(self.records):
            return None
        if self.start is None:
            self.start = time.time() + LEAD_S
        rec = self.records[self.cursor]
        self.cursor += 1
        self.in_flight += 1
        return rec, self.start + rec.t / self.speed

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.records) and self.in_flight == 0

    def summary(self) -> str:
        late = sorted(self.lateness_ms)
        if not late:
            return f"replay: sent 0 of {len(self.records)} requests"
        pct = late[min(len(late) - 1, int(0.99 * len(late)))]
        return (f"replay: sent {self.sent} of {len(self.records)} requests at speed "
                f"{self.speed:g} ({self.omitted} skipped: body not recorded); lateness "
                f"p50 {late[len(late) // 2]:.1f} ms, p99 {pct:.1f} ms, max {late[-1]:.1f} ms")


def state_for(environment: Any) -> ReplayState:
    state = getattr(environment, "_replay_state", None)
    if state is None:
        values = common.values_for(environment, GROUPS, required=("replay_file",))
        state = ReplayState(values["replay_file"], values["speed"])
        if state.omitted:
            common.log.warning("replay: %d requests have no recorded body (over the "
                               "recorder's size cap) and are skipped", state.omitted)
        # Name the file: a truncated last line is dropped, so this can be a damaged file.
        given = getattr(getattr(environment, "parsed_options", None), "replay_file", None)
        common.check(bool(state.records), f"the replay file {given or ''} holds no "
                                          "replayable request".replace("  ", " "))
        environment._replay_state = state
    return state


@events.init.add_listener
def _load(environment: Any, **_kw: Any) -> None:
    state_for(environment)  # a missing or unreadable file fails here, before traffic


@events.test_stop.add_listener
def _report(environment: Any, **_kw: Any) -> None:
    state = getattr(environment, "_replay_state", None)
    if state is not None:
        common.log.info("%s", state.summary())
        print(state.summary(), file=sys.stderr)


class ReplayUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.state = state_for(self.environment)

    @task
    def replay(self) -> None:
        claimed = self.state.claim()
        if claimed is None:
            gevent.sleep(0.2)  # nothing left: wait for the shape to end the run
            return
        rec, due = claimed
        delay = due - time.time()
        if delay > 0:
            gevent.sleep(delay)
        self.state.lateness_ms.append(max(0.0, (time.time() - due) * 1000.0))
        rejections = frozenset({rec.status}) if rec.status and 400 <= rec.status < 500 \
            else frozenset()
        try:
            common.send_raw(self, rec.method, rec.path, rec.body, rec.sendable_headers(),
                            rec.name or request_name(rec.path), rec.input_class or "replay",
                            rejections)
            self.state.sent += 1
        finally:
            self.state.in_flight -= 1


class ReplayShape(LoadTestShape):
    """Keeps the user pool up until every request is answered, then ends the run."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        env = self.runner.environment if self.runner is not None else None
        state = getattr(env, "_replay_state", None)
        if state is not None and state.finished:
            return None
        parsed = getattr(env, "parsed_options", None)
        users = getattr(parsed, "num_users", None) or common.values_for(env, GROUPS)[
            "replay_users"]
        return int(users), float(users) / SPAWN_S
