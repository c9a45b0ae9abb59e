"""Write a file so that readers never see half of it: a temporary file, then a rename.

Everything the harness writes into a run directory while the run goes (load.json,
series.json, resources.json, scrapes, profiles, the report) can be read at any moment by
`harness summary`, the live progress or a user's `cat`; a run killed mid-write leaves
the previous version, never a torn one. No heavy imports: the load driver uses it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["atomic_open", "write_text_atomic"]


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# mkstemp makes 0600 files; a run directory is read by other users (CI artifacts, a
# shared box), so the file gets the mode open() would have given it
_MODE = _file_mode()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], fsync: bool = False) -> Iterator[TextIO]:
    """A text file to write ``path`` through; it replaces ``path`` when the block ends
    without an exception (and is removed when it raises). ``fsync`` also survives a
    crash of the machine, at a few ms per file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, fsync: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step."""
    with atomic_open(path, fsync) as f:
        f.write(text)
