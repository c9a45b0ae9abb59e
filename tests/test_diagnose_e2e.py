"""`harness diagnose` on real runs of the reference service with injected faults.

Each run is short (6 s measured, 2 s warm-up). The service is started with its fault
configuration in REFSVC_FAULTS and loaded through ``harness run --target``, so the
resources and profile collectors attach to it as to any local service.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LOCUSTFILE = ROOT / "tests" / "locustfiles" / "fraud_simple.py"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, faults: str | None, users: int = 2) -> Path:
    port = _free_port()
    env = dict(os.environ)
    if faults:
        (out / "faults.yaml").write_text(faults)
        env["REFSVC_FAULTS"] = str(out / "faults.yaml")
    service = subprocess.Popen([PY, "-m", "reference_service.serve", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline or service.poll() is not None:
                    raise RuntimeError("reference service did not become ready") from None
                time.sleep(0.3)
        before = set(out.iterdir())
        subprocess.run([PY, "-m", "harness.cli", "run", "--target", f"http://127.0.0.1:{port}",
                        "--users", str(users), "--duration", "6s", "--warmup", "2s",
                        "--out", str(out), str(LOCUSTFILE)],
                       cwd=ROOT, check=True, capture_output=True, timeout=120)
    finally:
        service.terminate()
        service.wait(timeout=20)
    (run_dir,) = [p for p in set(out.iterdir()) - before if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("diagnose-runs")
    return {"clean": _run(out, None),
            "slow_store": _run(out, "store_latency: {ms: 20, distribution: fixed}\n")}


def _diagnose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "harness.cli", "diagnose", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_clean_run_has_no_false_alarm(runs: dict[str, Path]) -> None:
    done = _diagnose(str(runs["clean"]), "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert (runs["clean"] / "diagnosis.json").is_file()
    # measurement-validity warnings (a busy shared machine, few samples) are genuine here;
    # nothing about the service itself may be above info
    alarms = [f for f in d["findings"] if f["severity"] != "info" and f["layer"] != "measurement"]
    assert alarms == [], alarms


def test_slow_store_points_at_fetch_waiting(runs: dict[str, Path]) -> None:
    done = _diagnose(str(runs["slow_store"]), "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    primary = d["findings"][d["primary"]]
    assert (primary["layer"], primary["severity"]) == ("upstream", "warning")
    assert primary["data"]["stage"] == "fetch"
    # 20 ms of sleep per request is waiting, not computing
    assert primary["data"]["oncpu"] is None or primary["data"]["oncpu"] < 0.3


def test_baseline_change_names_fetch(runs: dict[str, Path]) -> None:
    done = _diagnose(str(runs["slow_store"]), "--baseline", str(runs["clean"]), "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    growth = [f for f in d["findings"] if f["layer"] == "change" and "stage" in f["data"]]
    assert growth, [f["title"] for f in d["findings"]]
    change = growth[0]
    assert change["data"]["stage"] == "stage:fetch"
    # a tail growth is a warning; a median-only shift (tail too noisy to bound) is info
    assert change["severity"] == ("warning" if " p50 " not in f" {change['title']}" else "info")


def test_unreadable_run_is_one_line_exit_2(tmp_path: Path) -> None:
    done = _diagnose(str(tmp_path / "nope"))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("harness diagnose: run directory")
    assert "Traceback" not in done.stderr
