"""launch.gunicorn_command / serve CLI argument rules, and the gthread worker class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import parse_server_timing

from reference_service.faults import FaultConfigError
from reference_service.launch import ServiceNotReady, cleanup, gunicorn_command, wait_ready


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"port": 0}, "port must be between 1 and 65535"),
    ({"port": 8000, "workers": 0}, "workers must be between 1 and 64"),
    ({"port": 8000, "worker_class": "gevent"}, "worker_class must be one of"),
    ({"port": 8000, "store": "redis"}, "store 'redis' needs redis_url"),
    ({"port": 8000, "store": "mongo"}, "store must be 'sqlite' or 'redis'"),
])
def test_gunicorn_command_rejects_bad_options(kwargs, words):
    with pytest.raises(ValueError, match=words):
        gunicorn_command(**kwargs)


def test_bad_fault_file_fails_before_start(tmp_path: Path):
    bad = tmp_path / "faults.yaml"
    bad.write_text("store_latency: {ms: fast}\n")
    with pytest.raises(FaultConfigError, match=r"store_latency.ms must be a finite number"):
        gunicorn_command(port=8000, faults=str(bad))
    r = subprocess.run([sys.executable, "-m", "reference_service.serve", "--port", "8000",
                        "--faults", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "store_latency.ms must be a finite number" in r.stderr
    assert "Traceback" not in r.stderr


def test_command_and_environment(tmp_path: Path):
    argv, env = gunicorn_command(port=8123, workers=3, worker_class="gthread", threads=4,
                                 default_versions={"fraud": "v2"}, admin_token="t",
                                 record_traffic=str(tmp_path))
    try:
        assert argv[:3] == [sys.executable, "-m", "gunicorn"]
        assert "127.0.0.1:8123" in argv and argv[argv.index("--threads") + 1] == "4"
        assert Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
        assert env["REFSVC_DEFAULT_VERSIONS"] == "fraud=v2" and env["OMP_NUM_THREADS"] == "1"
    finally:
        cleanup(env)
    assert not Path(env["PROMETHEUS_MULTIPROC_DIR"]).exists()


def test_wait_ready_names_the_last_error():
    with pytest.raises(ServiceNotReady, match="Connection refused|URLError"):
        wait_ready("http://127.0.0.1:9", 0.3)


def test_gthread_workers_default_version_and_recording(http, reference_service, tmp_path):
    rec = tmp_path / "traffic"
    svc = reference_service(workers=1, worker_class="gthread", threads=4,
                            default_versions={"fraud": "v2"}, record_traffic=str(rec))
    body = {"instances": [{"entity_id": 9, "features": {"amount": 20.0}}]}
    r = http("POST", svc.url + "/v1/models/fraud/predict", body)
    assert r.status == 200 and r.json()["version"] == "v2"
    assert "infer" in parse_server_timing(r.headers["server-timing"])
    http("POST", svc.url + "/v1/models/fraud/predict", b"{bad")
    from harness.rundir.replay import read_replay

    records = read_replay(rec).records
    assert [(r.status, r.path) for r in records] == [
        (200, "/v1/models/fraud/predict"), (400, "/v1/models/fraud/predict")]
    assert json.loads(records[0].body) == body and records[1].body == b"{bad"
