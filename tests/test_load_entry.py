"""`python -m harness.load` is the driver, as `python -m harness.load.driver` (both spellings
take the same arguments and exit with the same codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["harness.load", "harness.load.driver"])
def test_both_entry_points_check_the_config(tmp_path: Path, module: str) -> None:
    locustfile = tmp_path / "s.py"
    locustfile.write_text("from locust import HttpUser\n")
    config = tmp_path / "driver.json"
    config.write_text(json.dumps({"locustfile": str(locustfile), "run_dir": str(tmp_path),
                                  "model": "open", "rate": -3}))
    done = subprocess.run([sys.executable, "-m", module, str(config)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "driver: rate must be a number > 0 (got -3)"


def test_a_worker_without_a_master_port_is_a_config_error() -> None:
    done = subprocess.run([sys.executable, "-m", "harness.load", "--worker", "--locustfile",
                           "x.py"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "a worker needs --master-port (harness worker --master HOST:PORT)" in done.stderr
