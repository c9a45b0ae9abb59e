"""`harness record`: the command users type to make replay files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.rundir.replay import read_replay

LOG = (
    '127.0.0.1 - - [26/Nov/2026:01:00:00 +0000] "POST /v1/models/fraud/predict HTTP/1.1" 200 '
    '120 "-" "curl/8"\n'
    '127.0.0.1 - - [26/Nov/2026:01:00:00 +0000] "GET /healthz HTTP/1.1" 200 2 "-" "curl/8"\n'
    '127.0.0.1 - - [26/Nov/2026:01:00:02 +0000] "POST /v1/models/churn/predict HTTP/1.1" 200 '
    '99 "-" "curl/8"\n'
    "not a log line\n"
)


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_access_log_to_replay_with_bodies(tmp_path: Path) -> None:
    (tmp_path / "access.log").write_text(LOG)
    body = {"instances": [{"entity_id": 1, "features": {"amount": 3.0}}]}
    (tmp_path / "body.json").write_text(json.dumps(body))
    out = tmp_path / "replay.jsonl"
    res = harness("record", "--from-access-log", str(tmp_path / "access.log"), "-o", str(out),
                  "--body", f"/v1/models/fraud/predict={tmp_path / 'body.json'}",
                  "--path-prefix", "/v1/")
    assert res.returncode == 0, res.stderr
    assert "2 of 4 log lines kept" in res.stdout
    records = read_replay(out).records
    assert [(r.t, r.method, r.path) for r in records] == [
        (0.5, "POST", "/v1/models/fraud/predict"), (2.5, "POST", "/v1/models/churn/predict")]
    assert json.loads(records[0].body or b"") == body
    assert records[1].body is None  # no body given for that path: the log has none


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    res = harness("record", "--merge", str(tmp_path / "missing"), "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.startswith("harness record: merge needs a recording directory")
    res = harness("record", "--from-access-log", str(tmp_path / "nope.log"), "-o",
                  str(tmp_path / "o"), "--body", "nopath")
    assert res.returncode == 2
    assert "--body must be /PATH=FILE (got 'nopath')" in res.stderr
    assert "Traceback" not in res.stderr
