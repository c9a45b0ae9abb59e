"""Atomic file writes: the file is whole or the old one, with the usual mode, no debris."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from harness.rundir import write_json_atomic
from harness.rundir.atomic import atomic_open, write_text_atomic


def test_replaces_with_the_mode_open_would_give(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    path.write_text("old\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    mask = os.umask(0)
    os.umask(mask)
    # not mkstemp's 0600: a run directory is read by other users (CI artifacts)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["load.json"]


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "wall.collapsed"
    path.write_text("a;b 1\n")
    with pytest.raises(RuntimeError, match="torn"):
        with atomic_open(path) as f:
            f.write("a;b;c 2\n")
            raise RuntimeError("torn")
    assert path.read_text() == "a;b 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wall.collapsed"]
    with pytest.raises(ValueError, match="Out of range float"):  # NaN is not JSON
        write_json_atomic(tmp_path / "summary.json", {"p99": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wall.collapsed"]


def test_a_reader_sees_a_whole_file_at_every_moment(tmp_path: Path) -> None:
    path = tmp_path / "series.json"
    versions = ["x" * 200_000 + "\n", "y" * 300_000 + "\n"]
    write_text_atomic(path, versions[0])
    stop, seen = threading.Event(), set()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        write_text_atomic(path, versions[i % 2])
    stop.set()
    reader.join()
    assert seen <= set(versions) and seen
