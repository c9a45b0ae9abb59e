"""What the driver's master says about its workers, for the user and for run.json.

The driver emits ``waiting`` (how many workers it expects and where it listens) and one
``worker`` event per worker that connected, was refused or was lost. The orchestrator
prints them (:func:`describe`), keeps each in run.json's ``workers`` as it comes (so a
run that dies still says who took part), and notes a lost worker in the run's notes.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["describe", "record"]


def _this_host() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "THIS_HOST"


def _waiting(event: dict[str, Any]) -> tuple[str, str] | None:
    remote = int(event.get("remote") or 0)
    if not remote:
        return None
    host, _, port = str(event.get("bind", "")).rpartition(":")
    if host in ("0.0.0.0", "::", "*", ""):
        host = _this_host()
    return ("announce",
            f"waiting for {remote} worker(s) from other hosts (of {event.get('expected')}): "
            f"on each, run `harness worker --master {host}:{port}` (port {port}/tcp must be "
            "open to them)")


def _clock(event: dict[str, Any]) -> str:
    offset, rtt = event.get("offset_ms"), event.get("rtt_ms")
    if offset is None or rtt is None:
        return ""
    fix = ", corrected" if event.get("corrected") else ""
    return f", clock offset {float(offset):+.3f} ms ± {float(rtt) / 2:.3f} ms{fix}"


def describe(event: dict[str, Any]) -> tuple[str, str] | None:
    """(event type for the printer, message) for a ``waiting`` or ``worker`` event."""
    if event.get("type") == "waiting":
        return _waiting(event)
    what = event.get("event")
    if what == "connected":
        where = "remote" if event.get("remote") else "local"
        return ("announce" if event.get("remote") else "status",
                f"worker {event.get('connected')}/{event.get('expected')} connected: "
                f"{event.get('host')} ({where}{_clock(event)})")
    if what == "refused":
        return ("announce", f"a worker was refused: {event.get('reason')}")
    if what == "missing":
        return ("announce", f"worker {event.get('id')} on {event.get('host')} sent no "
                f"heartbeat for ~3 s, {float(event.get('after_s') or 0):.1f} s into the "
                "load: the run goes on with the others")
    if what == "back":
        return ("announce", f"worker {event.get('id')} on {event.get('host')} is back after "
                f"{float(event.get('missing_s') or 0):.1f} s")
    if what == "lost":
        return ("announce", lost_note(event))
    return None


def lost_note(event: dict[str, Any]) -> str:
    return (f"worker {event.get('id')} on {event.get('host')} was lost "
            f"{float(event.get('after_s') or 0):.1f} s into the load ({event.get('why')}): "
            f"the {event.get('requests_reported', 0)} requests of the "
            f"{event.get('intervals_reported', 0)} intervals it reported are kept; the run "
            "went on with the other workers")


def record(meta: dict[str, Any], event: dict[str, Any]) -> None:
    """Keep a ``worker`` event in run.json's ``workers`` (and a lost one in its notes)."""
    if event.get("type") != "worker":
        return
    rows = meta.setdefault("workers", [])
    keep = {k: v for k, v in event.items() if k != "type"}
    rows.append(keep)
    if event.get("event") == "lost":
        meta["notes"].append(lost_note(event))
