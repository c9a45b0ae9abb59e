"""The run's child processes: each leads a process group the harness owns, each is stopped
on every exit path.

:func:`spawn` starts a child in a session (and so a process group) of its own: a terminal's
Ctrl-C or hang-up reaches the harness alone, which stops its children in order (the load
driver flushes its last interval before the service goes away). Everything a child starts
stays in its group unless it makes a session of its own, so :func:`stop_group` reaches a
child's descendants even when the child itself is already dead: the Locust workers of a
load driver the OOM killer took, which the process tree no longer shows (they now have
parent 1). It signals the group and the leader's tree, waits a bounded time, and kills
what is left.

On Linux each child also gets the parent-death signal (``PR_SET_PDEATHSIG``, SIGTERM): if
the harness itself is killed with SIGKILL, which no handler sees, its children are told
to stop instead of running on with parent 1.

Every child :func:`spawn` started is remembered until it is stopped: :func:`stop_all` is
the last line of defence of a run's exit paths (a signal that came between a child's start
and the moment its owner recorded it). A run stops only the children started since its
:func:`mark` (a capacity sweep's service outlives each of its runs).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

__all__ = ["mark", "signal_group", "spawn", "stop_all", "stop_group"]

_PR_SET_PDEATHSIG = 1
_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc symbol: the harness still stops its children
        _prctl = None

_LIVE: dict[int, tuple[int, subprocess.Popen[Any]]] = {}  # pid -> (sequence, process)
_LOCK = threading.Lock()
_SEQUENCE = [0]


def _pdeathsig(parent: int) -> Any:
    if _prctl is None:
        return None

    def child() -> None:
        # In the child between fork and exec: no imports, no locks, nothing but two calls.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above: nobody to wait for
            os._exit(1)

    return child


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen)`` in a new session, told to stop when the harness
    dies, and remembered until :func:`stop_group` or :func:`stop_all` stopped it."""
    proc: subprocess.Popen[Any] = subprocess.Popen(  # noqa: S603 - argv lists, never a shell
        list(argv), start_new_session=True, preexec_fn=_pdeathsig(os.getpid()), **popen)
    try:  # who this pid is: once the child is gone, another process may get the number
        proc._harness_created = psutil.Process(proc.pid).create_time()  # type: ignore[attr-defined]
    except psutil.Error:
        pass
    with _LOCK:
        _SEQUENCE[0] += 1
        _LIVE[proc.pid] = (_SEQUENCE[0], proc)
    return proc


def mark() -> int:
    """A point in the order of spawns: ``stop_all(mark)`` stops only what came after."""
    with _LOCK:
        return _SEQUENCE[0]


def _pid(proc: subprocess.Popen[Any] | int) -> int:
    return proc if isinstance(proc, int) else proc.pid


def _created(proc: subprocess.Popen[Any] | int) -> float | None:
    return None if isinstance(proc, int) else getattr(proc, "_harness_created", None)


def _members(leader: int, created: float | None = None) -> list[psutil.Process]:
    """Processes of ``leader``'s group, and the leader's descendants (which may have left
    it for a group of their own), not counting zombies. ``created``: the leader's start
    time; when a live process holds the pid with another start time, the pid was reused
    (the kernel never reuses a pid while a group of that id has a member, so ours is gone)
    and nothing is ours."""
    if created is not None:
        try:
            if abs(psutil.Process(leader).create_time() - created) > 0.01:
                return []
        except psutil.Error:
            pass
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == leader:
                found[p.pid] = p
        except OSError:
            continue
    try:
        root = psutil.Process(leader)
        for p in [root, *root.children(recursive=True)]:
            found.setdefault(p.pid, p)
    except psutil.Error:
        pass
    return [p for p in found.values() if _alive(p) and p.pid != os.getpid()]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_group(proc: subprocess.Popen[Any] | int, signum: int) -> None:
    """Send ``signum`` to the child's group and to its descendants."""
    for p in _members(_pid(proc), _created(proc)):
        try:
            p.send_signal(signum)
        except psutil.Error:
            continue


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def stop_group(proc: subprocess.Popen[Any] | int, timeout_s: float = 10.0,
               signum: int = signal.SIGTERM) -> list[int]:
    """Stop a child, its group and its descendants: ``signum``, up to ``timeout_s`` for them
    to exit, then SIGKILL for what is left (bounded too). Returns the pids that had to be
    killed. Idempotent; a child that already exited is reaped."""
    pid = _pid(proc)
    popen = proc if not isinstance(proc, int) else _LIVE.get(pid, (0, None))[1]
    created = _created(popen) if popen is not None else None
    members = _members(pid, created)
    for p in members:
        try:
            p.send_signal(signum)
        except psutil.Error:
            continue
    killed = []
    for p in _wait_gone(members, timeout_s) + _members(pid, created):  # + any forked since
        try:
            p.kill()
            killed.append(p.pid)
        except psutil.Error:
            continue
    _wait_gone([p for p in members if p.pid in killed], 5.0)
    if popen is not None:
        try:
            popen.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
    with _LOCK:
        _LIVE.pop(pid, None)
    return killed


def stop_all(since: int = 0, timeout_s: float = 10.0) -> list[int]:
    """Stop every child :func:`spawn` started after ``since`` (a :func:`mark`) that is not
    stopped yet; the pids stopped."""
    with _LOCK:
        live = [proc for seq, proc in _LIVE.values() if seq > since]
    for proc in live:
        stop_group(proc, timeout_s)
    return [proc.pid for proc in live]
