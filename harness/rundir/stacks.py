"""Collapsed stacks (py-spy ``--format raw``) and their speedscope conversion.

A collapsed line is ``frame;frame;...;frame COUNT``, root first, leaf last.
py-spy writes a Python frame as ``function (path:line)`` and, with
``--subprocesses``, prefixes each stack with ``process PID:"command line"``
frames (one per process level). A quoted command line may itself contain ``;``,
so process frames are tokenised before splitting on ``;``.

The speedscope document follows https://www.speedscope.app/file-format-schema.json
(``FileFormat.File`` with ``SampledProfile`` entries): one shared frames table,
one sampled profile per view, each distinct stack once with its sample count as
weight (unit ``none``: weights are counts, not time; time = count / rate).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.rundir.atomic import atomic_open

__all__ = [
    "SPEEDSCOPE_SCHEMA_URL", "Frame", "Stack", "parse_collapsed", "parse_frame",
    "process_frame", "read_collapsed", "to_speedscope", "write_collapsed",
]

SPEEDSCOPE_SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"

_PROCESS_RE = re.compile(r'process (\d+):"')
_FRAME_RE = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    """One frame of a collapsed stack.

    ``function`` is the function (or ``process PID`` for a process frame);
    ``file`` and ``line`` are None when py-spy gave none (process frames,
    ``--nolineno``); ``text`` is the frame exactly as py-spy wrote it.
    """

    function: str
    file: str | None
    line: int | None
    text: str

    @property
    def is_process(self) -> bool:
        return self.text.startswith("process ") and self.file is None

    @property
    def key(self) -> str:
        """Function identity without the line: ``function (file)``."""
        return f"{self.function} ({self.file})" if self.file is not None else self.function


@dataclass(frozen=True)
class Stack:
    """A distinct stack (root first) and how many samples had it."""

    frames: tuple[Frame, ...]
    count: int

    @property
    def leaf(self) -> Frame | None:
        return self.frames[-1] if self.frames else None


def parse_frame(text: str) -> Frame:
    """Parse one frame as py-spy writes it; unknown shapes keep the text as the function."""
    match = _PROCESS_RE.match(text)
    if match:
        command = text[match.end():].rstrip('"')
        return Frame(f"process {match.group(1)}: {command}", None, None, text)
    match = _FRAME_RE.match(text)
    if match is None:
        return Frame(text, None, None, text)
    line = match.group("line")
    return Frame(match.group("function"), match.group("file"),
                 int(line) if line is not None else None, text)


def process_frame(pid: int, command: str) -> Frame:
    """The frame py-spy ``--subprocesses`` puts above a process's stacks."""
    return parse_frame(f'process {pid}:"{command}"')


def write_collapsed(path: Path, stacks: Iterable[Stack]) -> None:
    """Write stacks in collapsed format (``frame;frame;... count``), as py-spy does."""
    with atomic_open(path) as f:
        for stack in stacks:
            f.write(";".join(fr.text for fr in stack.frames) + f" {stack.count}\n")


def _split_frames(body: str) -> list[str]:
    frames: list[str] = []
    i = 0
    while i < len(body):
        match = _PROCESS_RE.match(body, i)
        if match:
            end = body.find('";', match.end())
            stop = len(body) if end == -1 else end + 1
            frames.append(body[i:stop])
            i = stop + 1
            continue
        j = body.find(";", i)
        if j == -1:
            j = len(body)
        frames.append(body[i:j])
        i = j + 1
    return [f for f in frames if f]


def parse_collapsed(text: str) -> list[Stack]:
    """Parse collapsed-stack text; identical stacks are merged, order of first appearance kept.

    Raises ValueError naming the line when a line has no positive integer count. A line
    with a count and no frames (py-spy ``--nonblocking`` writes one when a read of a
    process's stacks came out empty) is dropped: it says nothing about where time went.
    """
    merged: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or _empty_count(raw):
            continue
        body, _, count_text = line.rpartition(" ")
        if not body or not count_text.isdigit() or int(count_text) <= 0:
            raise ValueError(
                f"collapsed stack line {number} must end with a positive sample count "
                f"(got {raw[:120]!r})"
            )
        key = tuple(_split_frames(body))
        merged[key] = merged.get(key, 0) + int(count_text)
    cache: dict[str, Frame] = {}
    stacks = []
    for key, count in merged.items():
        for t in key:
            if t not in cache:
                cache[t] = parse_frame(t)
        stacks.append(Stack(tuple(cache[t] for t in key), count))
    return stacks


def _empty_count(raw: str) -> int:
    """The count of a frame-less line (`` 3``), 0 for any other line."""
    line = raw.strip()
    return int(line) if raw[:1].isspace() and line.isdigit() else 0


def empty_samples(text: str) -> int:
    """Samples on frame-less lines, which parse_collapsed drops: py-spy's own sample count
    is the stacks' plus these."""
    return sum(_empty_count(raw) for raw in text.splitlines())


def read_collapsed(path: Path) -> list[Stack]:
    """Parse a collapsed-stack file; a missing or empty file is an empty profile."""
    if not path.exists():
        return []
    return parse_collapsed(path.read_text(encoding="utf-8", errors="replace"))


def to_speedscope(views: Mapping[str, Iterable[Stack]], name: str = "profile",
                  exporter: str = "mlserve-harness") -> dict[str, Any]:
    """Build a speedscope document: one shared frames table, one sampled profile per view."""
    frames: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    profiles = []
    for view, stacks in views.items():
        samples: list[list[int]] = []
        weights: list[int] = []
        for stack in stacks:
            ids = []
            for frame in stack.frames:
                fid = index.get(frame.text)
                if fid is None:
                    fid = index[frame.text] = len(frames)
                    entry: dict[str, Any] = {"name": frame.function}
                    if frame.file is not None:
                        entry["file"] = frame.file
                    if frame.line is not None:
                        entry["line"] = frame.line
                    frames.append(entry)
                ids.append(fid)
            samples.append(ids)
            weights.append(stack.count)
        profiles.append({
            "type": "sampled", "name": view, "unit": "none",
            "startValue": 0, "endValue": sum(weights),
            "samples": samples, "weights": weights,
        })
    return {
        "$schema": SPEEDSCOPE_SCHEMA_URL,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": exporter,
    }
