"""A run directory is not trusted (issue 20): paths that lead out of it, devices, huge files
and valid JSON of the wrong shape give a warning or one clear error, never a traceback,
and never a read outside the directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_rundir import RunBuilder

from harness.analysis.summary import summarize
from harness.rundir import RunDir, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path) -> RunBuilder:
    b = RunBuilder(tmp_path)
    b.write_meta()
    b.record("client", "A", {k: [1000 * (k + 1)] * 10 for k in range(7)})
    b.load(measured={"requests": 50, "failures": 0, "achieved_rps": 10.0})
    return b


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def _add_series(b: RunBuilder, file: str) -> None:
    b.entries.append({"file": file, "metric": "client", "name": "B", "stage": None,
                      "tag": None, "out_of_range": 0})
    write_json_atomic(b.path / "latency" / "series.json", {
        "interval_s": 1.0, "start_time": 0, "lowest_us": 1, "highest_us": 3_600_000_000,
        "significant_figures": 3, "series": b.entries})


@pytest.mark.parametrize("file", ["../../../../etc/passwd", "../../dev/zero", "/etc/passwd",
                                  "sub/dir.hlog", ".."])
def test_series_files_outside_latency_are_ignored(tmp_path: Path, file: str) -> None:
    b = _run(tmp_path)
    _add_series(b, file)
    rd = RunDir(b.path)
    assert [s["name"] for s in rd.series()] == ["A"]
    assert any("plain file name inside latency/" in w for w in rd.warnings), rd.warnings
    assert rd.histogram("client", "A").get_total_count() == 50


def test_symlinks_out_of_the_run_and_devices_are_refused(tmp_path: Path) -> None:
    b = _run(tmp_path)
    os.symlink("/dev/zero", b.path / "latency" / "zero.hlog")
    outside = tmp_path / "outside.hlog"
    outside.write_text((b.path / "latency" / "client~A.hlog").read_text())
    os.symlink(outside, b.path / "latency" / "escape.hlog")
    _add_series(b, "zero.hlog")
    _add_series(b, "escape.hlog")
    rd = RunDir(b.path)
    assert rd.histogram("client", "B").get_total_count() == 0  # neither was read
    text = " ".join(rd.warnings)
    assert "zero.hlog leads outside the run directory" in text
    assert "escape.hlog leads outside the run directory" in text
    res = _cli("summary", "--recompute", str(b.path))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr


def test_an_oversized_json_file_is_ignored_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    import harness.rundir.directory as directory

    b = _run(tmp_path)
    monkeypatch.setattr(directory, "MAX_JSON_BYTES", 1000)  # the limit is 64 MiB
    (b.path / "load.json").write_text(json.dumps({"pad": "x" * 2000}))
    rd = RunDir(b.path)
    assert rd.load()["source"] == "intervals.jsonl"
    assert any("load.json is" in w and "over the 1000-byte limit" in w for w in rd.warnings)


@pytest.mark.parametrize(("field", "value"), [("timeline", "x"), ("load", []),
                                               ("collectors", 3), ("notes", {"a": 1}),
                                               ("target", "http://x")])
def test_run_json_fields_of_the_wrong_shape(tmp_path: Path, field: str, value) -> None:
    b = _run(tmp_path)
    meta = json.loads((b.path / "run.json").read_text())
    meta[field] = value
    (b.path / "run.json").write_text(json.dumps(meta))
    rd = RunDir(b.path)
    assert field not in rd.meta
    assert any(f"/{field} (" in w for w in rd.warnings), rd.warnings
    s = summarize(b.path, write=False)
    assert s["requests"][-1]["count"] == 50


@pytest.mark.slow
def test_every_command_reads_a_run_json_of_the_wrong_shape(tmp_path: Path) -> None:
    b = _run(tmp_path)
    meta = json.loads((b.path / "run.json").read_text())
    meta.update(timeline="x", load=[], collectors=3, notes={"a": 1}, target="http://x")
    (b.path / "run.json").write_text(json.dumps(meta))
    for cmd in (["summary", "--recompute"], ["diagnose"], ["report"],
                ["check", "--slo", "examples/slo.yaml"], ["compare", str(b.path)]):
        res = _cli(*cmd[:1], str(b.path), *cmd[1:])
        assert res.returncode in (0, 1, 2) and "Traceback" not in res.stderr, (cmd, res.stderr)
        assert res.returncode == 2 or res.stdout.strip(), (cmd, res.stdout)


def test_load_json_timeline_of_the_wrong_shape(tmp_path: Path) -> None:
    b = _run(tmp_path)
    b.load(timeline="x", measured={"requests": 50, "failures": 0, "achieved_rps": 10.0})
    assert RunDir(b.path).window()[1] == b.meta()["timeline"]["load_end"]


@pytest.mark.slow
@pytest.mark.parametrize("content", ["[]", "{}", '{"requests": "x"}'])
def test_summary_json_of_the_wrong_shape(tmp_path: Path, content: str) -> None:
    b = _run(tmp_path)
    (b.path / "summary.json").write_text(content)
    res = _cli("summary", str(b.path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "summary.json does not match its schema" in res.stderr
    assert "--recompute" in res.stderr
    rd = RunDir(b.path)
    assert rd.saved_summary() is None
    for cmd in (["report"], ["check", "--slo", "examples/slo.yaml"]):
        res = _cli(*cmd[:1], str(b.path), *cmd[1:])
        assert res.returncode in (0, 1, 2) and "Traceback" not in res.stderr, (cmd, res.stderr)
    assert _cli("summary", "--recompute", str(b.path)).returncode == 0
