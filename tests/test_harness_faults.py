"""`harness run` against targets that misbehave, interrupted runs, and damaged inputs.

tests/test_run_e2e.py already covers: target down at start, the served reference killed
mid-run, SIGINT with --serve reference. This file adds a target that hangs, answers
garbage, closes or resets connections and sends malformed Server-Timing (each counted by
type against the server's own count), an external target dying mid-run, SIGTERM with
Locust worker processes and py-spy running, and damaged run directories, SLO files and
replay files read through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = ROOT / "tests" / "locustfiles" / "fraud_simple.py"
MISBEHAVING = ROOT / "tests" / "misbehaving_server.py"
USERS = 4
pytestmark = pytest.mark.slow


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def run_dir_from(stdout: str) -> Path:
    for line in stdout.splitlines():
        if line.startswith("run directory: "):
            return Path(line.split("run directory: ", 1)[1].split("  (status")[0])
    raise AssertionError(f"no run directory line in output:\n{stdout}")


def start_misbehaving(tmp: Path, *args: str) -> tuple[subprocess.Popen[str], str, Path]:
    log = tmp / "truth.json"
    proc = subprocess.Popen([sys.executable, str(MISBEHAVING), "--port", "0", "--print-port",
                             "--log", str(log), *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.strip().isdigit(), line
    return proc, f"http://127.0.0.1:{line.strip()}", log


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One run against a target cycling through every misbehaviour."""
    tmp = tmp_path_factory.mktemp("faulty")
    proc, url, log = start_misbehaving(tmp, "--pattern", "ok,hang,garbage,close,reset,badst")
    try:
        t0 = time.monotonic()
        res = harness("run", str(SIMPLE), "--target", url, "--users", str(USERS),
                      "--duration", "5s", "--warmup", "0s", "--request-timeout", "0.5s",
                      "--out", str(tmp / "runs"), "--no-profile")
        wall = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    yield {"res": res, "wall": wall, "truth": json.loads(log.read_text()), "tmp": tmp}


def test_misbehaving_target_errors_are_counted_by_type(faulty_run: dict) -> None:
    res, truth = faulty_run["res"], faulty_run["truth"]
    assert res.returncode == 3, res.stderr  # degraded
    assert "Traceback" not in res.stderr
    # On schedule: 5 s of load plus start-up and the 2 s stop grace, not a 60 s timeout.
    assert faulty_run["wall"] < 40
    rd = RunDir(run_dir_from(res.stdout))
    assert rd.meta["status"] == "degraded"
    load = rd.load()
    errors = {k.split("|", 1)[1]: v for k, v in load["errors"].items()}
    # Each misbehaviour maps to one error type. The server counts a request when it reads
    # it; the harness when it ends, so at most one request per user is in flight at the end.
    expected = {"TimeoutError": truth["hang"], "HTTPParseError": truth["garbage"],
                "HTTPConnectionClosed": truth["close"], "ConnectionResetError": truth["reset"]}
    assert set(errors) == set(expected), errors
    for kind, n in expected.items():
        assert n - USERS <= errors[kind] <= n, (kind, errors, truth)
    ok_served = truth["ok"] + truth["badst"]
    successes = load["measured"]["requests"] - load["measured"]["failures"]
    assert ok_served - USERS <= successes <= ok_served
    assert truth["badst"] - USERS <= load["server_timing_malformed"] <= truth["badst"]
    # Every fault kind happened many times, so the counts above are not vacuous.
    assert min(truth.values()) >= 5, truth
    summary = json.loads((rd.path / "summary.json").read_text())
    check = {c["check"]: c for c in summary["self_check"]}
    assert check["transport_errors"]["severity"] == "error"
    assert "TimeoutError" in check["transport_errors"]["detail"]
    assert check["server_timing"]["ok"] is False


def test_run_directory_of_a_faulty_run_is_readable_by_every_command(faulty_run: dict) -> None:
    path = run_dir_from(faulty_run["res"].stdout)
    # summary.json was written from these files by the run itself (checked above); report,
    # check and compare read them through the same RunDir, so one more reader is enough.
    diag = harness("diagnose", str(path))
    assert diag.returncode == 0 and "Traceback" not in diag.stderr
    # The error rule names the error types it saw (the most frequent ones).
    assert any(k in diag.stdout for k in ("TimeoutError", "HTTPParseError",
                                         "HTTPConnectionClosed", "ConnectionResetError"))


def test_requests_unanswered_at_the_stop_are_counted(tmp_path: Path) -> None:
    """A target that accepts and never answers, a request timeout longer than the run: each
    user's one request is still waiting when the stop grace runs out. Locust fires no event
    for a killed request; the harness counts it, so the run says what it never measured."""
    proc, url, log = start_misbehaving(tmp_path, "--pattern", "hang")
    try:
        res = harness("run", str(SIMPLE), "--target", url, "--users", "2", "--duration", "2s",
                      "--warmup", "0s", "--request-timeout", "60s",
                      "--out", str(tmp_path / "runs"), "--no-profile")
    finally:
        proc.kill()
        proc.wait()
    truth = json.loads(log.read_text())
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    rd = RunDir(run_dir_from(res.stdout))
    load = rd.load()
    # The server read one request per user, and the harness's own GET /v1/models and
    # /metrics scrapes (each given up after its timeout): those are not load.
    assert truth["hang"] >= 2, truth
    assert load["unanswered"] == load["unanswered_long"] == 2, load
    assert load["measured"]["requests"] == 0
    summary = json.loads((rd.path / "summary.json").read_text())
    check = {c["check"]: c for c in summary["self_check"]}
    assert check["unanswered"]["ok"] is False and check["unanswered"]["severity"] == "error"
    assert check["unanswered"]["detail"].startswith("2 requests had waited over 1 s")


def test_external_target_dying_mid_run_is_counted_and_degraded(tmp_path: Path) -> None:
    proc, url, log = start_misbehaving(tmp_path, "--pattern", "ok", "--die-after", "2")
    try:
        t0 = time.monotonic()
        res = harness("run", str(SIMPLE), "--target", url, "--users", "2", "--duration", "5s",
                      "--warmup", "0s", "--out", str(tmp_path / "runs"), "--no-profile")
        wall = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    assert wall < 40
    rd = RunDir(run_dir_from(res.stdout))
    load = rd.load()
    served = json.loads(log.read_text())["ok"]
    successes = load["measured"]["requests"] - load["measured"]["failures"]
    assert served - 2 <= successes <= served
    errors = {k.split("|", 1)[1] for k in load["errors"]}
    assert "ConnectionRefusedError" in errors, load["errors"]
    # The per-interval record covers the whole window, dead target included.
    points = rd.intervals()
    assert points and points[-1]["t"] + points[-1]["dt"] - points[0]["t"] >= 4.0
    assert sum(p["failures"] for p in points[-2:]) > 0  # the dead target's last seconds


ADMIN_TOKEN = "tok-" + "9f3e1c77a2b64d0e"


def test_sigterm_with_locust_workers_and_pyspy_leaves_no_orphans(tmp_path: Path) -> None:
    # The admin token rides along (by environment, as documented) to check it is never
    # written into the run directory or the service log.
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(SIMPLE), "--serve", "reference",
         "--users", "2", "--workers", "2", "--duration", "60s", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "REFSVC_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        deadline = time.monotonic() + 90
        tree: list[psutil.Process] = []
        while time.monotonic() < deadline:
            tree = psutil.Process(proc.pid).children(recursive=True)
            lines = " ".join(" ".join(_cmdline(p)) for p in tree)
            data = [p for p in tmp_path.glob("*/intervals.jsonl") if p.stat().st_size > 0]
            if "py-spy" in lines and "--worker" in lines and "gunicorn" in lines and data:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the run never got going: {[_cmdline(p) for p in tree]}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, 143), err
    assert "Traceback" not in err
    rd = RunDir(run_dir_from(out))
    assert rd.meta["status"] == "incomplete"
    assert rd.load()["measured"]["requests"] > 0
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not [(p.pid, _cmdline(p)) for p in alive if _running(p)]
    assert (rd.path / "service.log").is_file()
    leaks = [str(f) for f in rd.path.rglob("*") if f.is_file()
             and ADMIN_TOKEN.encode() in f.read_bytes()]
    assert not leaks, f"the admin token was written to {leaks}"
    assert ADMIN_TOKEN not in out + err


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- damaged inputs, read through the CLI -----------------------------------------------------

def _damaged_copy(src: Path, dst: Path, name: str, content: bytes | None) -> Path:
    shutil.copytree(src, dst)
    if content is None:
        (dst / name).unlink()
    else:
        (dst / name).write_bytes(content)
    return dst


@pytest.mark.parametrize(("name", "how", "commands"), [
    # One command each: every command opens the run through the same RunDir reader.
    ("run.json", "truncated", [["diagnose"]]),
    ("run.json", "missing", [["summary", "--recompute"]]),
    ("summary.json", "truncated", [["summary"]]),
    ("run.json", "newer-schema", [["check", "--slo", "examples/slo.yaml"]]),
])
def test_damaged_run_directory_is_a_clear_error_naming_the_file(
        faulty_run: dict, tmp_path: Path, name: str, how: str, commands: list[list[str]]) -> None:
    src = run_dir_from(faulty_run["res"].stdout)
    raw = (src / name).read_bytes()
    if how == "truncated":
        content: bytes | None = raw[: len(raw) // 2]
    elif how == "missing":
        content = None
    else:
        meta = json.loads(raw)
        meta["schema_version"] = "2.0"
        content = json.dumps(meta).encode()
    bad = _damaged_copy(src, tmp_path / "bad", name, content)
    for cmd in commands:
        res = harness(*cmd, str(bad))
        assert res.returncode == 2, (cmd, res.stdout[-500:], res.stderr)
        assert "Traceback" not in res.stderr
        assert str(bad) in res.stderr, (cmd, res.stderr)
        assert ("2.0" in res.stderr) if how == "newer-schema" else (name in res.stderr), \
            (cmd, res.stderr)


@pytest.mark.parametrize("name", ["load.json", "latency/series.json"])
def test_damaged_data_file_is_named_as_a_warning_not_a_crash(
        faulty_run: dict, tmp_path: Path, name: str) -> None:
    src = run_dir_from(faulty_run["res"].stdout)
    raw = (src / name).read_bytes()
    bad = _damaged_copy(src, tmp_path / "bad", name, raw[: len(raw) // 2] + b"\x00\xff{")
    res = harness("diagnose", str(bad))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert name in res.stdout + res.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"objectives: [\n", "not valid YAML"),
    (b"objectives: {p99: fast}\n", "objectives must be a non-empty list"),
])
def test_wrong_slo_file_is_a_clear_error(faulty_run: dict, tmp_path: Path,
                                         content: bytes | None, message: str) -> None:
    slo = tmp_path / "slo.yaml"
    if content is not None:
        slo.write_bytes(content)
    res = harness("check", str(run_dir_from(faulty_run["res"].stdout)), "--slo", str(slo))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert str(slo) in res.stderr and message in res.stderr, res.stderr


def test_truncated_replay_file_is_a_clear_error(tmp_path: Path) -> None:
    proc, url, _ = start_misbehaving(tmp_path, "--pattern", "ok")
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text('{"format": "mlserve-replay", "version": 1, "base_time": 1.0}\n'
                         '{"t": 0.1, "method": "POST", "path": "/v1/models/fraud/predict", "b')
    # A truncated last line is dropped like a recording still being written, so a file
    # whose only request is cut off holds nothing to replay.
    # (Binary and missing replay files are rejected by harness/replayfile.py's own tests.)
    cases = {truncated: "holds no replayable request"}
    try:
        for path, message in cases.items():
            res = harness("run", "scenarios/replay.py", "--target", url, "--duration", "2s",
                          "--out", str(tmp_path / "runs"), "--no-profile", "--",
                          "--replay-file", str(path))
            assert res.returncode == 2, res.stderr
            assert "Traceback" not in res.stderr
            assert str(path) in res.stderr and message in res.stderr, res.stderr
    finally:
        proc.kill()
        proc.wait()
    assert not os.path.exists(tmp_path / "runs") or all(
        json.loads((d / "run.json").read_text())["status"] == "failed"
        for d in (tmp_path / "runs").iterdir())
