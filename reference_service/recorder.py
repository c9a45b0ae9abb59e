"""Traffic recording for replay: each worker appends its requests as JSON lines.

``REFSVC_RECORD_TRAFFIC=DIR`` makes every worker write ``DIR/traffic-<pid>.jsonl``, one line
per prediction request, in arrival order within the worker::

    {"t": 1764121133.512, "path": "/v1/models/fraud/predict", "model": "fraud",
     "version": "v1", "status": 200, "body": {...the request JSON...}}

``t`` is the epoch time the handler started; ``body`` is null when it was not valid JSON
(the raw text is then in ``"raw"``, cut to 4 KiB). Lines are flushed as written.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, Any


class TrafficRecorder:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _file(self) -> IO[str]:
        if self._fh is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._fh = open(self.directory / f"traffic-{self._pid}.jsonl", "a", buffering=1)  # noqa: SIM115
        return self._fh

    def record(self, t: float, path: str, model: str, version: str | None, status: int,
               body: Any, raw: bytes | None = None) -> None:
        entry: dict[str, Any] = {"t": round(t, 6), "path": path, "model": model,
                                 "version": version, "status": status, "body": body}
        if body is None and raw is not None:
            entry["raw"] = raw[:4096].decode("utf-8", errors="replace")
        line = json.dumps(entry, separators=(",", ":"))
        with self._lock:
            self._file().write(line + "\n")
