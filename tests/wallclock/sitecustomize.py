"""Steps the wall clock of every Python process started with this directory on PYTHONPATH.

``HARNESS_TEST_WALL_STEPS=FILE``: FILE (re-read at most every 50 ms; absent: no step)
holds ``M1:+5,M2:-3600``: from ``time.monotonic() == M1`` on, ``time.time()`` reads 5 s
ahead; from M2 on, an hour behind as well (steps add up). The monotonic clock is the
machine's, so every process (harness, load driver, target) sees each step at the same
instant, as with an NTP step or an operator's ``date -s``, without touching the clock of
a shared machine. Only ``time.time`` moves: the monotonic clock, as on a real machine,
does not step.
"""

from __future__ import annotations

import os
import time

_FILE = os.environ.get("HARNESS_TEST_WALL_STEPS", "")
if _FILE:
    _real_time = time.time
    _state: dict[str, object] = {"read_at": -1.0, "steps": []}

    def _steps(now: float) -> list[tuple[float, float]]:
        if now - float(_state["read_at"]) >= 0.05:  # type: ignore[arg-type]
            _state["read_at"] = now
            try:
                with open(_FILE, encoding="utf-8") as fh:
                    text = fh.read().strip()
                _state["steps"] = [(float(a), float(b)) for a, b in
                                   (p.split(":") for p in text.split(",") if p)]
            except (OSError, ValueError):
                pass
        return _state["steps"]  # type: ignore[return-value]

    def _stepped_time() -> float:
        now = time.monotonic()
        return _real_time() + sum(by for at, by in _steps(now) if now >= at)

    time.time = _stepped_time
