"""The profile collector: py-spy against a real gunicorn, failure paths, file formats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
from collector_support import children, gunicorn, python, wait_for

from harness.run.collectors.base import CollectorContext
from harness.run.collectors.profile import ProfileCollector, find_pyspy, parse_pyspy_log
from harness.rundir.stacks import (
    empty_samples,
    parse_collapsed,
    parse_frame,
    read_collapsed,
    to_speedscope,
)

# Transcribed from speedscope's src/lib/file-format-spec.ts (FileFormat.File, SampledProfile),
# the source of https://www.speedscope.app/file-format-schema.json.
SPEEDSCOPE_SCHEMA = {
    "type": "object",
    "required": ["$schema", "shared", "profiles"],
    "properties": {
        "$schema": {"const": "https://www.speedscope.app/file-format-schema.json"},
        "shared": {
            "type": "object", "required": ["frames"],
            "properties": {"frames": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "file": {"type": "string"},
                               "line": {"type": "number"}, "col": {"type": "number"}},
                "additionalProperties": False}}},
        },
        "profiles": {"type": "array", "items": {
            "type": "object",
            "required": ["type", "name", "unit", "startValue", "endValue", "samples", "weights"],
            "properties": {
                "type": {"const": "sampled"}, "name": {"type": "string"},
                "unit": {"enum": ["none", "nanoseconds", "microseconds", "milliseconds",
                                  "seconds", "bytes"]},
                "startValue": {"type": "number"}, "endValue": {"type": "number"},
                "samples": {"type": "array",
                            "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
                "weights": {"type": "array", "items": {"type": "number"}},
            },
            "additionalProperties": False}},
        "name": {"type": "string"}, "activeProfileIndex": {"type": "number"},
        "exporter": {"type": "string"},
    },
    "additionalProperties": False,
}

APP = '''
import threading

def crunch_numbers(n):
    acc = 0
    for i in range(n):
        acc += (i * i) % 7
    return acc

def wait_for_upstream():
    threading.Event().wait(0.05)

def application(environ, start_response):
    crunch_numbers(60000)
    wait_for_upstream()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''
APP_MAP = {"name": "test_app", "rules": [
    {"stage": "compute", "function": "crunch_numbers"},
    {"stage": "upstream", "function": "wait_for_upstream"},
    {"stage": "framework", "file": "*/gunicorn/*", "fallback": True},
]}


def check_speedscope(doc: dict, total: int) -> None:
    jsonschema.validate(doc, SPEEDSCOPE_SCHEMA)
    n_frames = len(doc["shared"]["frames"])
    for profile in doc["profiles"]:
        assert len(profile["samples"]) == len(profile["weights"])
        assert all(0 <= i < n_frames for stack in profile["samples"] for i in stack)
        assert profile["endValue"] - profile["startValue"] == sum(profile["weights"]) == total


def context(run_dir: Path, pid: int | None, start_in: float, length: float,
            **options: object) -> CollectorContext:
    now = time.time()
    return CollectorContext(run_dir, pid, None, now + start_in, now + start_in + length, options)


@pytest.mark.slow
def test_real_gunicorn_oncpu_and_wall(tmp_path: Path) -> None:
    map_path = tmp_path / "app_map.json"
    map_path.write_text(json.dumps(APP_MAP))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with gunicorn(APP, tmp_path) as (service, url):
        workers = children(service.pid)
        load = subprocess.Popen(["wrk", "-t1", "-c2", "-d5s", url], stdout=subprocess.DEVNULL)
        collector = ProfileCollector()
        ctx = context(run_dir, service.pid, 0.5, 3.0, wall=True, stage_map=str(map_path),
                      rate_hz=100)
        collector.start(ctx)
        assert collector.pids() == []  # nothing runs before the measured window
        time.sleep(1.0)
        assert len(collector.pids()) == 4  # one py-spy per worker and view
        time.sleep(2.7)
        status = collector.stop()
        assert collector.stop() == status
        load.wait()
    pdir = run_dir / "profile"
    assert status["ok"] is True and status["reason"] is None
    assert status["views"] == ["oncpu", "wall"] and status["rate_hz"] == 100
    assert status["nonblocking"] is True  # two py-spys must not both pause the workers
    assert status["command"][:2] == [find_pyspy()[0], "record"]
    assert "--subprocesses" not in status["command"]
    rows = {row["pid"]: row for row in status["processes"]}
    assert set(rows) == {service.pid, *workers}
    assert rows[service.pid]["sampled"] is False  # the idle master is not sampled
    assert "a parent process that used at most" in rows[service.pid]["why"]
    for pid in workers:
        assert rows[pid]["sampled"] is True and rows[pid]["parent"] == service.pid
        assert rows[pid]["samples"]["oncpu"] > 0 and rows[pid]["samples"]["wall"] > 0
    assert status["window"]["start"] >= ctx.measure_start - 0.05
    # 2 workers x ~12 % on CPU (7 ms loop per ~57 ms request) x 100 Hz x 3 s: ~70 expected
    assert status["samples"] > 35
    # py-spy's own CPU, from each py-spy's rusage: 4 py-spys at 100 Hz for 3 s
    assert 0 < status["cpu_s"] < 4 * 3.0
    assert status["cpu_s"] == pytest.approx(sum(rows[pid]["cpu_s"] for pid in workers), abs=0.01)
    on_disk = json.loads((pdir / "status.json").read_text())
    assert {k: v for k, v in on_disk.items() if k != "by_view"} == status
    # the map given is the map used; every bundled map's coverage is beside it
    assert status["stage_map"]["name"] == "test_app" and status["stage_map"]["chosen"] == "given"
    assert {"test_app", "python_web", "reference_service"} <= set(status["stage_map"]["candidates"])
    # single-threaded sync workers: the on-CPU samples are CPU (and, on a busy machine, the
    # wait for a CPU), never waiting threads
    check = status["oncpu_check"]
    assert check["verdict"] in ("ok", "runnable_counted"), check
    assert set(check["processes"]) == {str(pid) for pid in workers}
    assert status["cost"]["blocking"] is False and status["cost"]["pyspy_core_pct"] > 0
    # py-spy's own count = the stacks + its --nonblocking reads that found no stack
    wall_counts = on_disk["by_view"]["wall"]
    assert wall_counts["samples"] == wall_counts["collapsed_samples"] + wall_counts["empty_samples"]
    assert "Samples:" in (pdir / "py-spy.log").read_text()

    oncpu, wall = read_collapsed(pdir / "oncpu.collapsed"), read_collapsed(pdir / "wall.collapsed")
    assert sum(s.count for s in oncpu) == status["samples"]
    # stacks sit under the master's and then the worker's process frame, as --subprocesses
    # writes them, so the report can split the profile by process
    for stack in oncpu + wall:
        top, worker = stack.frames[0], stack.frames[1]
        assert top.is_process and top.function.startswith(f"process {service.pid}: ")
        assert worker.is_process and int(worker.function.split()[1].rstrip(":")) in workers
    assert not (pdir / "parts").exists()
    for view, stacks in (("oncpu", oncpu), ("wall", wall)):
        doc = json.loads((pdir / f"{view}.speedscope.json").read_text())
        check_speedscope(doc, sum(s.count for s in stacks))
        assert "crunch_numbers" in {f["name"] for f in doc["shared"]["frames"]}

    stages = json.loads((pdir / "stages.json").read_text())
    assert stages["map"]["name"] == "test_app"
    cpu, wall_by = stages["oncpu"], stages["wall"]
    # CPU goes to the loop; wall time mostly to the 50 ms wait (~10x the loop on an idle machine)
    assert cpu["compute"] > 3 * cpu["upstream"]
    assert wall_by["upstream"] > wall_by["compute"]
    wall_detail = stages["detail"]["wall"]["stages"]
    assert wall_detail["upstream"]["waiting"] >= 0.9 * wall_detail["upstream"]["samples"]
    assert wall_detail["compute"]["waiting"] == 0
    assert wall_detail["compute"]["top_self"][0]["function"].startswith("crunch_numbers (")


@pytest.mark.slow
def test_recycled_workers_get_their_own_pyspy(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with gunicorn(APP, tmp_path, args=["--max-requests", "15"]) as (service, url):
        first = children(service.pid)
        load = subprocess.Popen(["wrk", "-t1", "-c2", "-d4s", url], stdout=subprocess.DEVNULL)
        # the wall view: a worker that lives ~1 s gets ~20 samples however little CPU it
        # used (on-CPU, the CI machine once had 10 samples in all)
        collector = ProfileCollector(views=("wall",), stop_timeout_s=5)
        collector.start(context(run_dir, service.pid, 0.0, 3.5))
        time.sleep(3.7)
        status = collector.stop()
        load.wait()
    # ~17 requests/s per worker for 3.5 s, recycled every 15: several generations
    sampled = [row for row in status["processes"] if row["sampled"]]
    assert len(sampled) >= 4 and set(first) <= {row["pid"] for row in sampled}
    assert any(row["exited"] for row in sampled)
    assert status["ok"] is True and status["target_exited"] is False and "note" not in status
    later = [row for row in sampled if row["pid"] not in first]
    assert later and sum(row["samples"]["wall"] for row in later) > 0
    assert status["cpu_s"] > 0  # the py-spys that ended with their worker were reaped too
    stacks = read_collapsed(run_dir / "profile" / "wall.collapsed")
    seen = {int(s.frames[1].function.split()[1].rstrip(":")) for s in stacks}
    assert seen & {row["pid"] for row in later}
    assert sum(s.count for s in stacks) == status["samples"]


def profile_family(tmp_path: Path, code: str, window_s: float,
                   pyspy: Path | None = None) -> tuple[int, list[int], dict]:
    """Run ``code`` (it prints 'ready' once its children are up), profile its tree for
    ``window_s`` and kill it: (parent pid, its children at the start, the status)."""
    parent = python(code)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
        kids = children(parent.pid)
        collector = ProfileCollector(pyspy=pyspy, stop_timeout_s=5)
        collector.start(context(tmp_path, parent.pid, 0.0, window_s))
        time.sleep(window_s + 0.3)
        status = collector.stop()
    finally:
        for pid in children(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
    return parent.pid, kids, status


def slow_pyspy(tmp_path: Path) -> Path:
    """A py-spy that starts 1 s late: a slow machine, made deterministic."""
    wrapper = tmp_path / "slow-py-spy"
    real = find_pyspy(None)[0]
    assert real is not None
    wrapper.write_text(f"#!/bin/sh\nsleep 1\nexec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.slow
def test_a_process_pyspy_cannot_read_makes_the_profile_partial(tmp_path: Path) -> None:
    # an idle Python parent with a busy Python child and a non-Python child (sleep)
    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen(['sleep', '60']), subprocess.Popen([sys.executable, '-c',"
            " 'while True: sum(i * i for i in range(1000))'])]\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    parent, (sleeper, busy), status = profile_family(tmp_path, code, 2.0)
    rows = {row["pid"]: row for row in status["processes"]}
    assert rows[parent]["sampled"] is False
    assert rows[busy]["samples"]["oncpu"] > 0 and "failed" not in rows[busy]
    assert rows[sleeper]["sampled"] is True and rows[sleeper]["failed"]
    assert status["ok"] is True and status["failed_processes"] == 1
    assert status["note"].startswith(f"py-spy wrote no profile for 1 of 2 sampled processes "
                                     f"(pid {sleeper}: ")


@pytest.mark.slow
def test_a_process_gone_before_pyspy_attached_is_missed_not_failed(tmp_path: Path) -> None:
    # py-spy starts 1 s after the collector saw the process, and one child lives only
    # 0.4 s. On the CI machine a recycled gunicorn worker ended this way and the profile
    # was wrongly called partial.
    code = ("import subprocess, sys, time\n"
            "spin = 'while True: sum(i * i for i in range(1000))'\n"
            "kids = [subprocess.Popen([sys.executable, '-c', spin]),"
            " subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.4)'])]\n"
            # the brief child is not reaped: ended is ended, zombie or not
            "print('ready', flush=True)\ntime.sleep(60)\n")
    _, (busy, brief), status = profile_family(tmp_path, code, 2.5, slow_pyspy(tmp_path))
    rows = {row["pid"]: row for row in status["processes"]}
    assert rows[busy]["samples"]["oncpu"] > 0 and "failed" not in rows[busy]
    assert rows[brief]["sampled"] is True and "failed" not in rows[brief]
    assert rows[brief]["exited"] is True and rows[brief]["missed"].startswith("exited before")
    assert status["ok"] is True and status["failed_processes"] == 0 and "note" not in status
    assert status["missed_processes"] == 1


@pytest.mark.slow
def test_window_ending_while_pyspy_attaches_is_missed_not_failed(tmp_path: Path) -> None:
    # py-spy started on a process moments before the window ends gets SIGINT before it
    # has attached; on a loaded machine a new gunicorn worker ended a run this way
    wrapper = slow_pyspy(tmp_path)
    target = python("import time\nprint('ready', flush=True)\ntime.sleep(30)\n")
    try:
        assert target.stdout is not None and target.stdout.readline() == b"ready\n"
        collector = ProfileCollector(pyspy=wrapper, stop_timeout_s=5)
        collector.start(context(tmp_path, target.pid, 0.0, 0.3))
        time.sleep(0.5)
        status = collector.stop()
    finally:
        target.kill()
        target.wait()
    (row,) = status["processes"]
    assert row["missed"] == "the measured window ended while py-spy was attaching"
    assert row["exited"] is False and "failed" not in row
    assert status["missed_processes"] == 1 and status["failed_processes"] == 0
    # nothing was sampled at all, so there is no profile, and the reason says why
    assert status["ok"] is False
    assert status["reason"] == ("py-spy (oncpu): the measured window ended while py-spy "
                                "was attaching")


@pytest.mark.slow
def test_service_dying_mid_profile(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with gunicorn(APP, tmp_path) as (service, url):
        workers = children(service.pid)
        load = subprocess.Popen(["wrk", "-t1", "-c2", "-d3s", url], stdout=subprocess.DEVNULL)
        collector = ProfileCollector(stop_timeout_s=5)
        collector.start(context(run_dir, service.pid, 0.0, 30.0))
        wait_for(collector.pids, 5, "py-spy to start")
        time.sleep(1.5)
        for pid in [service.pid, *workers]:  # the whole service crashes
            os.kill(pid, signal.SIGKILL)
        service.wait()
        # py-spy notices by itself, writes what it has and exits
        wait_for(lambda: not collector.pids(), 15, "py-spy to notice the service died")
        status = collector.stop()
        load.wait()
    assert status["ok"] is True
    assert status["target_exited"] is True
    assert status["note"] == "the service exited while py-spy was sampling: the profile is partial"
    assert status["samples"] > 0
    assert (run_dir / "profile" / "stages.json").exists()


def test_pyspy_not_found_keeps_the_run_going(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "py-spy"
    collector = ProfileCollector.from_options({"pyspy": str(missing)})
    collector.start(context(tmp_path, 1, 0.0, 1.0))
    status = collector.stop()
    assert status["ok"] is False
    assert status["reason"] == f"py-spy not found at {str(missing)!r} (the configured pyspy path)"
    assert json.loads((tmp_path / "profile" / "status.json").read_text())["ok"] is False
    assert find_pyspy(missing) == (None, status["reason"])


def test_cannot_attach_reports_pyspys_error(tmp_path: Path) -> None:
    target = subprocess.Popen(["sleep", "30"])  # not a Python process: py-spy cannot profile it
    try:
        collector = ProfileCollector(stop_timeout_s=5)
        collector.start(context(tmp_path, target.pid, 0.0, 30.0))
        wait_for(collector.pids, 5, "py-spy to start")
        wait_for(lambda: not collector.pids(), 15, "py-spy to give up")
        status = collector.stop()
    finally:
        target.kill()
        target.wait()
    assert status["ok"] is False
    assert status["reason"].startswith("py-spy (oncpu): ")
    assert "Error" in status["reason"] or "Failed" in status["reason"]
    assert not (tmp_path / "profile" / "stages.json").exists()


def test_external_target_and_early_stop(tmp_path: Path) -> None:
    status = _run_and_stop(tmp_path / "a", None)
    assert status == {**status, "ok": False,
                      "reason": "target is not local: there is no service process to attach "
                                "py-spy to"}
    status = _run_and_stop(tmp_path / "b", 1, start_in=60.0)
    assert status["ok"] is False
    assert status["reason"] == "stopped before the measured window started: no profile"


def _run_and_stop(run_dir: Path, pid: int | None, start_in: float = 0.0) -> dict:
    run_dir.mkdir()
    collector = ProfileCollector()
    collector.start(context(run_dir, pid, start_in, 1.0))
    return collector.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_hz": 0}, "rate_hz must be between 1 and 1000 (got 0)"),
        ({"rate_hz": 1001}, "(got 1001)"),
        ({"rate_hz": 99.5}, "rate_hz must be an integer (got 99.5)"),
        ({"views": ["cpu"]}, "views must be distinct names from ['oncpu', 'wall'] (got ['cpu'])"),
        ({"views": "oncpu"}, "non-empty list"),
        ({"wall": "yes"}, "wall must be true or false (got 'yes')"),
        ({"rate": 100}, "unknown profile options ['rate']"),
        ({"stage_map": "/no/such/map.json"}, "stage map file must exist"),
        ({"stop_timeout_s": 0}, "stop_timeout_s must be > 0 (got 0)"),
    ],
)
def test_bad_options_name_the_value(options: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ProfileCollector.from_options(options)
    assert message in str(info.value)


def test_stop_before_start() -> None:
    assert ProfileCollector().stop() == {"ok": False, "reason": "stop() called before start()"}


def test_parse_pyspy_log() -> None:
    text = (
        "py-spy> Sampling process 100 times a second. Press Control-C to exit.\n"
        "py-spy> 1.05s behind in sampling, results may be inaccurate. Try reducing the "
        "sampling rate\n"
        "py-spy> 250.50ms behind in sampling, results may be inaccurate. Try reducing the "
        "sampling rate\n"
        "py-spy> Stopped sampling because process exited\n"
        "py-spy> Wrote raw flamegraph data to 'x'. Samples: 1234 Errors: 7\n"
    )
    got = parse_pyspy_log(text)
    assert got == {"samples": 1234, "errors": 7, "lag_warnings": 2, "max_lag_s": 1.05,
                   "target_exited": True, "error_lines": []}
    denied = parse_pyspy_log("Error: Permission Denied: Try running again with elevated ...\n")
    assert denied["error_lines"] == [
        "Error: Permission Denied: Try running again with elevated ..."]
    assert denied["samples"] is None


def test_collapsed_parsing_and_speedscope_by_value() -> None:
    text = (
        'process 7:"gunicorn -k sync; -w 2";main (/a/m.py:3);f (/a/m.py:10) 3\n'
        'process 7:"gunicorn -k sync; -w 2";main (/a/m.py:3);g (/a/m.py:20) 2\n'
        'process 7:"gunicorn -k sync; -w 2";main (/a/m.py:3);f (/a/m.py:10) 1\n'
        "\n"
    )
    stacks = parse_collapsed(text)
    assert [(len(s.frames), s.count) for s in stacks] == [(3, 4), (3, 2)]
    proc, main, f = stacks[0].frames
    assert proc.is_process and proc.function == "process 7: gunicorn -k sync; -w 2"
    assert (main.function, main.file, main.line) == ("main", "/a/m.py", 3)
    assert f.key == "f (/a/m.py)"
    assert parse_frame("<module> (pkg/x.py)").line is None
    doc = to_speedscope({"oncpu": stacks}, name="t")
    check_speedscope(doc, 6)
    assert doc["shared"]["frames"] == [
        {"name": "process 7: gunicorn -k sync; -w 2"},
        {"name": "main", "file": "/a/m.py", "line": 3},
        {"name": "f", "file": "/a/m.py", "line": 10},
        {"name": "g", "file": "/a/m.py", "line": 20},
    ]
    assert doc["profiles"][0]["samples"] == [[0, 1, 2], [0, 1, 3]]
    assert doc["profiles"][0]["weights"] == [4, 2]
    with pytest.raises(ValueError, match="line 2 must end with a positive sample count"):
        parse_collapsed("a (/x.py:1) 1\na (/x.py:1) many\n")
    # py-spy --nonblocking writes " 1" for a read that came out empty: no frames, dropped
    assert parse_collapsed("a (/x.py:1) 2\n 1\n") == parse_collapsed("a (/x.py:1) 2\n")
    # ... and counted apart, so the stacks plus these are py-spy's own sample count
    assert empty_samples("a (/x.py:1) 2\n 1\nb (/y.py:2) 1\n 3\n7\n") == 4
    with pytest.raises(ValueError, match="line 1 must end"):
        parse_collapsed("7\n")  # a bare count at the start of a line is a torn line


def test_a_parent_is_sampled_only_after_two_busy_looks() -> None:
    from harness.run.collectors.proctree import BUSY_SHARE
    from harness.run.collectors.proctree import ParentLooks as _ParentLooks

    looks = _ParentLooks()
    assert looks.busy_twice(0.0, 1.0) is False  # a first look has no interval yet
    assert looks.busy_twice(0.5, 1.5) is False  # busy (a whole core) once: a forking master
    assert looks.busy_twice(1.0, 1.5) is False  # then idle
    assert looks.busy_twice(1.5, 1.5 + BUSY_SHARE) is False  # 2x BUSY_SHARE once more
    assert looks.busy_twice(2.0, 1.5 + 2 * BUSY_SHARE) is True  # and again: a serving parent
    assert looks.max_share == 1.0
    assert looks.busy_twice(2.5, None) is False  # gone between looks
