"""The scenario locustfiles under plain ``locust`` against the reference service under
gunicorn: names, tags and outcomes as documented, bad options stopped before any traffic,
shapes ending the run, and the incident-reproduction recipe (record with a fault, replay
against a fresh service with the same fault, the same stage degrades alike)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import free_port, parse_server_timing
from test_recording import start_echo

from harness.rundir.replay import ReplayRecord, read_replay, write_replay

REPO = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
TAG_LOGGER = '''
import json, os, time
import gevent
from locust import events

_out = open(os.environ["TAG_LOG"], "a", buffering=1)


@events.request.add_listener
def _log(request_type, name, context, response, exception, response_time, **_kw):
    headers = getattr(response, "headers", None) or {}
    _out.write(json.dumps({
        # each user is one greenlet, and the event fires in it; t: when the request started
        "user": id(gevent.getcurrent()), "t": time.time() - response_time / 1000.0,
        "name": f"{request_type} {name}", "input_class": context.get("input_class"),
        "outcome": context.get("outcome"), "status": getattr(response, "status_code", 0),
        "failed": exception is not None, "timing": headers.get("Server-Timing")}) + "\\n")


@events.test_start.add_listener
def _start(**_kw):
    _out.write(json.dumps({"event": "test_start", "t": time.time()}) + "\\n")


@events.spawning_complete.add_listener
def _spawned(user_count, **_kw):
    _out.write(json.dumps({"event": "spawned", "users": user_count, "t": time.time()}) + "\\n")
'''


def run_locust(scenario: str, host: str, tmp: Path, *args: str, seconds: int = 4,
               users: int = 4, env: dict[str, str] | None = None) -> tuple[Any, list[dict]]:
    """Plain `locust -f scenarios/<scenario>.py,<tag logger>`; (process, logged requests)."""
    logger = tmp / "tag_logger.py"
    logger.write_text(TAG_LOGGER)
    log = tmp / f"tags-{scenario}-{len(list(tmp.glob('tags-*')))}.jsonl"
    cmd = [LOCUST, "-f", f"{REPO / 'scenarios' / scenario}.py,{logger}", "--headless",
           "-u", str(users), "-r", str(users), "-H", host, "--only-summary", *args]
    if seconds:
        cmd += ["-t", f"{seconds}s"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TAG_LOG": str(log),
                               **(env or {})})
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, [r for r in rows if "event" not in r]


def runner_events(tmp: Path) -> list[dict]:
    """test_start and spawning_complete as the tag logger saw them, in all runs in ``tmp``."""
    return [r for log in sorted(tmp.glob("tags-*.jsonl")) for r in map(
        json.loads, log.read_text().splitlines()) if "event" in r]


@pytest.fixture(scope="module")
def service(reference_service_module):
    return reference_service_module(workers=2)


@pytest.mark.slow
def test_production_scenario_names_tags_and_no_failures(service, tmp_path):
    proc, rows = run_locust("production", service.url, tmp_path, "--think-time", "0.05")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(rows) >= 10  # the model mix itself is checked in test_traffic.py
    names = {r["name"] for r in rows}
    assert names <= {"POST predict fraud", "POST predict churn", "POST predict ranking"}
    assert len(names) >= 2
    assert all(r["input_class"] == "production" and r["outcome"] == "accepted"
               and not r["failed"] for r in rows)
    stages = parse_server_timing(rows[0]["timing"])
    assert {"fetch", "infer", "serialize", "app"} <= set(stages)


@pytest.mark.slow
def test_ood_scenario_tags_every_class_and_counts_rejections_apart(service, tmp_path):
    shares = ("covariate_shift=0.12,null_features=0.12,extreme_values=0.12,"
              "unseen_categories=0.12,oversized_batch=0.12,high_dimensional=0.12,"
              "unknown_entities=0.12")
    proc, rows = run_locust("ood", service.url, tmp_path, "--ood-shares", shares,
                            "--think-time", "0.02", seconds=5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_class = Counter(r["input_class"] for r in rows)
    assert set(by_class) == {"production", "covariate_shift", "null_features",
                             "extreme_values", "unseen_categories", "oversized_batch",
                             "high_dimensional", "unknown_entities"}, by_class
    outcomes = {c: Counter(r["outcome"] for r in rows if r["input_class"] == c)
                for c in by_class}
    # The reference service validates categories, batch size and feature names (422/413)
    # and answers the rest (defaults for unknown entities and nulls): none is a failure.
    for cls in ("unseen_categories", "oversized_batch", "high_dimensional"):
        assert set(outcomes[cls]) == {"rejected"}, (cls, outcomes[cls])
    for cls in ("production", "covariate_shift", "null_features", "extreme_values",
                "unknown_entities"):
        assert set(outcomes[cls]) == {"accepted"}, (cls, outcomes[cls])
    assert not any(r["failed"] for r in rows)
    assert all(r["status"] in (413, 422) for r in rows if r["outcome"] == "rejected")


@pytest.mark.parametrize("args, env, message", [
    (["--replay-file", "/nonexistent/traffic.jsonl"], {}, "cannot be read"),
    ([], {"SCENARIO_REPLAY_FILE": "/etc/hostname"}, "/etc/hostname:1: not valid JSON"),
    (["--ood-classes", "covariate_shift,teleport"], {}, "unknown class 'teleport'"),
    (["--ood-share", "1.5"], {}, "--ood-share: must be >= 0 and <= 1"),
    ([], {"SCENARIO_OOD_SHARES": "null_features=-0.1"}, "share of null_features must be in"),
    (["--shape", "wave"], {}, "shape kind must be one of"),
    ([], {"SCENARIO_SPEED": "0"}, "SCENARIO_SPEED: must be > 0"),
])
def test_bad_scenario_inputs_fail_before_any_traffic(tmp_path, args, env, message):
    scenario = "replay" if any("REPLAY" in k or "SPEED" in k for k in env) \
        or "--replay-file" in args else "ood"
    if scenario == "replay" and "SCENARIO_REPLAY_FILE" not in env and "--replay-file" \
            not in args:  # a good file, so that only the option under test is wrong
        good = tmp_path / "good.jsonl"
        write_replay(good, [ReplayRecord(0.0, "GET", "/x")], base_time=0.0)
        env = {**env, "SCENARIO_REPLAY_FILE": str(good)}
    server = start_echo(tmp_path, threads=2)
    try:
        proc, rows = run_locust(scenario, server.url, tmp_path, *args, seconds=3, env=env)
    finally:
        server.stop()
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert any(message in line and line.startswith("scenario error:") for line in err), \
        proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    assert rows == []
    assert not list(server.record_dir.glob("replay-*.jsonl"))  # nothing reached the server


@pytest.mark.slow
def test_a_shape_drives_the_users_and_ends_the_run(tmp_path):
    """step:start=1,step=2,every=1s,steps=2: one user for a second, then three, then the
    end of the shape stops the run (no -t). Locust polls the shape once a second and
    spawns the two new users at 2/s, so the shape's times hold from below exactly (a
    user cannot start before the tick that adds it) and from above with 0.5 s for a busy
    machine's lateness."""
    server = start_echo(tmp_path, threads=8)
    try:
        proc, rows = run_locust("production", server.url, tmp_path, "--shape",
                                "step:start=1,step=2,every=1s,steps=2", seconds=0,
                                env={"SCENARIO_THINK_TIME": "0.2"})
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Shape test completed" in proc.stderr or "Shape test stopping" in proc.stderr
    (start,), spawned = [(e["t"]) for e in runner_events(tmp_path)
                         if e["event"] == "test_start"], [
        e for e in runner_events(tmp_path) if e["event"] == "spawned"]
    # the levels, in order, and when the second one was reached
    assert [e["users"] for e in spawned] == [1, 3], spawned
    assert 1.0 <= spawned[1]["t"] - start <= 2.5, spawned
    first: dict[int, float] = {}
    for r in sorted(rows, key=lambda r: r["t"]):
        first.setdefault(r["user"], r["t"])
    users = sorted(first, key=first.__getitem__)
    # never more than the shape's 3 users; the added ones only after the 1 s tick
    assert 2 <= len(users) <= 3, first
    assert all(first[u] - start >= 1.0 for u in users[1:]), (start, first)
    # the shape ended the run at 2 s (+0.5): nothing started later, and locust exited by
    # itself, long before the 90 s the test would wait
    assert max(r["t"] for r in rows) - start <= 2.5, max(r["t"] for r in rows) - start


class Served:
    def __init__(self, tmp: Path, artifacts: Path, faults: Path, record: Path | None):
        from reference_service.launch import gunicorn_command, wait_ready

        port = free_port()
        argv, self.extra = gunicorn_command(port=port, workers=1, faults=str(faults),
                                            artifacts_dir=str(artifacts),
                                            record_traffic=str(record) if record else None)
        env = {**os.environ, **self.extra}
        self.log = open(tmp / f"incident-{port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=tmp, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(self.url, 60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        from reference_service.launch import cleanup

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        self.log.close()
        cleanup(self.extra)


def _fetch_ms(rows: list[dict]) -> np.ndarray:
    return np.array([parse_server_timing(r["timing"])["fetch"] for r in rows
                     if r["timing"] and r["status"] == 200])


@pytest.mark.slow
def test_incident_reproduction_the_same_stage_degrades_alike(tmp_path, artifacts_dir):
    """Fault: feature store +30 ms on 20 % of requests. Recorded during the incident,
    replayed against a fresh service with the same fault: in both, the share of requests
    whose fetch stage takes >= 25 ms is 20 % within binomial tolerance (4 sigma), the
    slow ones add about 30 ms, and the other requests' fetch stays fast."""
    faults = tmp_path / "faults.yaml"
    faults.write_text("store_latency: {ms: 30, probability: 0.2}\n")
    record = tmp_path / "recording"
    incident = Served(tmp_path, artifacts_dir, faults, record)
    try:
        proc, live = run_locust("production", incident.url, tmp_path, "--think-time", "0.05",
                                seconds=5, users=3)
    finally:
        incident.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = read_replay(record)
    assert abs(len(recorded.records) - len(live)) <= 3  # all but requests cut at the end

    fresh = Served(tmp_path, artifacts_dir, faults, None)
    try:
        proc, replayed = run_locust("replay", fresh.url, tmp_path, "--replay-file", str(record),
                                    seconds=30, users=20)
    finally:
        fresh.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(replayed) == len(recorded.records)
    assert {r["name"] for r in replayed} == {r["name"] for r in live}
    assert {r["input_class"] for r in replayed} == {"replay"}
    live_fetch, replay_fetch = _fetch_ms(live), _fetch_ms(replayed)
    for fetch in (live_fetch, replay_fetch):
        n, slow = fetch.size, fetch >= 25.0
        assert abs(slow.sum() - 0.2 * n) < 4 * np.sqrt(n * 0.2 * 0.8), (slow.sum(), n)
        assert 28.0 <= np.median(fetch[slow]) <= 45.0
        assert np.median(fetch[~slow]) < 10.0
    excess_live = live_fetch.mean() - np.median(live_fetch)
    excess_replay = replay_fetch.mean() - np.median(replay_fetch)
    assert 0.5 < excess_replay / excess_live < 2.0, (excess_live, excess_replay)
