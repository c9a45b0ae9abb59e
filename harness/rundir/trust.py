"""Reading a run directory that is not trusted: it may come from a colleague, a CI artifact,
or a tool that wrote it wrong. Every file is read through :func:`read_bounded` (confined to
the directory, regular files only, size-bounded); JSON of the wrong shape is cut down to
what the schema allows (:func:`drop_invalid`); series entries must name plain files
(:func:`series_entry_problem`). Each refusal is a warning, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["MAX_JSON_BYTES", "MAX_LOG_BYTES", "drop_invalid", "read_bounded",
           "series_entry_problem"]

# Bounds on what is read: a JSON file, a line-oriented file (.hlog, .jsonl, .csv).
MAX_JSON_BYTES = 64 * 2**20
MAX_LOG_BYTES = 1 * 2**30
_SAFE_FILE = re.compile(r"[^/\\\x00-\x1f]{1,255}")  # a name, not a path


def read_bounded(root: Path, rel: str, limit: int, warn: Callable[[str], None]) -> str | None:
    """A regular file inside the run directory, at most ``limit`` bytes; None (with a
    warning when it exists but is refused) otherwise. Symbolic links that lead out of
    the run directory, devices and FIFOs are refused: the directory is not trusted."""
    path = root / rel
    try:
        real, top = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as exc:
        warn(f"{rel} cannot be resolved ({exc}); ignored")
        return None
    if not path.exists():
        return None
    if top not in real.parents:
        warn(f"{rel} leads outside the run directory (to {real}); ignored")
        return None
    if not real.is_file():
        warn(f"{rel} is not a regular file; ignored")
        return None
    try:
        size = real.stat().st_size
        if size > limit:
            warn(f"{rel} is {size} bytes, over the {limit}-byte limit; ignored")
            return None
        return real.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        warn(f"{rel} cannot be read ({exc.strerror or exc}); ignored")
        return None


def drop_invalid(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Remove the values of ``doc`` that violate ``schema`` (a wrong type, a bad enum
    value...) so the readers meet a missing field, which they handle, instead of a field of
    the wrong shape; the list says what was dropped. Required-but-missing fields stay missing.
    """
    dropped = []
    for error in Draft202012Validator(schema).iter_errors(doc):
        path = list(error.absolute_path)
        if not path:
            continue
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, (dict, list)) else None
        last = path[-1]
        if isinstance(parent, dict) and last in parent:
            del parent[last]
        elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
            parent[last] = None
        else:
            continue
        dropped.append(f"/{'/'.join(str(p) for p in path)} ({error.message[:80]})")
    return dropped


def series_entry_problem(entry: Any) -> str | None:
    """Why an entry of latency/series.json cannot be used (None when it can): its file must
    be a plain file name inside latency/, its fields of the documented types."""
    if not isinstance(entry, dict):
        return f"not an object ({str(entry)[:60]})"
    file = entry.get("file")
    if not isinstance(file, str) or not _SAFE_FILE.fullmatch(file) or file in (".", ".."):
        return f"file must be a plain file name inside latency/ (got {str(file)[:80]!r})"
    if not isinstance(entry.get("metric"), str) or not isinstance(entry.get("name"), str):
        return f"metric and name must be strings ({file})"
    for key in ("stage", "tag"):
        if entry.get(key) is not None and not isinstance(entry.get(key), str):
            return f"{key} must be a string or null ({file})"
    if not isinstance(entry.get("out_of_range", 0), int):
        return f"out_of_range must be an integer ({file})"
    return None
