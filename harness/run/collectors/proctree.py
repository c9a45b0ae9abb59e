"""A process's descendants, read cheaply from /proc (psutil elsewhere), and the watch of a
service's tree that decides which of its processes the profiler samples.

Shared by the resources sampler (4 Hz) and the profile collector (which attaches one
py-spy per service process and re-discovers the tree twice a second, :class:`TreeWatch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import psutil

__all__ = ["BUSY_SHARE", "ParentLooks", "TreeWatch", "cmdline", "cpu_seconds", "descendants",
           "started_at"]

BUSY_SHARE = 0.05  # a parent process using this share of a core is sampled too

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def descendants(pid: int) -> dict[int, int] | None:
    """{descendant pid: its parent pid} for every process below ``pid``; None when it is gone.

    Linux lists each thread's children in /proc/PID/task/TID/children: walking those costs
    a few reads per process in the tree, where psutil's ``children(recursive=True)`` reads
    the parent of every process on the machine (5 ms with 76 processes, at 4 Hz for two
    trees ~4 % of a core). Elsewhere, psutil.
    """
    if not os.path.isdir(f"/proc/{pid}/task"):
        return _descendants_psutil(pid)
    out: dict[int, int] = {}
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            if parent == pid:
                return None
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = f.read().split()
            except FileNotFoundError:
                if parent == pid and tid == str(pid) and not out:
                    # no children file (kernel without CONFIG_PROC_CHILDREN): ask psutil
                    return _descendants_psutil(pid)
                continue  # the thread ended between listdir and open
            except OSError:
                continue
            for kid in kids:
                out[int(kid)] = parent
                stack.append(int(kid))
    return out


def _descendants_psutil(pid: int) -> dict[int, int] | None:
    try:
        below = psutil.Process(pid).children(recursive=True)
    except _GONE:
        return None
    out = {}
    for proc in below:
        try:
            out[proc.pid] = proc.ppid()
        except _GONE:
            continue
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used; None when it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except _GONE:
        return None
    return float(times.user + times.system)


def started_at(pid: int) -> float | None:
    """When the process started (epoch s): with the pid, it names one process even after
    the pid is reused. None when it is gone, or has ended and waits to be reaped."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except _GONE:
        return None


def cmdline(pid: int) -> str:
    """The process's command line as one string (its name when the line is unreadable)."""
    try:
        proc = psutil.Process(pid)
        return " ".join(proc.cmdline()) or proc.name()
    except _GONE:
        return f"pid {pid}"


@dataclass
class ParentLooks:
    """What the watch's looks at a parent process found: is it busy enough to sample?"""

    last: tuple[float, float] | None = None  # (monotonic time, CPU seconds) of the last look
    busy_before: bool = False
    max_share: float = 0.0  # the largest share of a core seen between two looks

    def busy_twice(self, now: float, used: float | None) -> bool:
        """Record a look; True when this and the previous interval both used >= BUSY_SHARE."""
        last, self.last = self.last, (now, used or 0.0)
        share = None if last is None or used is None or now <= last[0] \
            else (used - last[1]) / (now - last[0])
        self.max_share = max(self.max_share, share or 0.0)
        busy = share is not None and share >= BUSY_SHARE
        twice, self.busy_before = busy and self.busy_before, busy
        return twice


@dataclass
class TreeWatch:
    """The processes of a service's tree worth sampling, found look after look.

    A process is sampled when it has no children (a gunicorn or uvicorn worker; the
    service itself when it is a single process) or when it used >= BUSY_SHARE of a
    core over two looks in a row (a parent that serves requests itself). An idle
    parent, such as gunicorn's master, costs py-spy as much per sample as a worker
    and shows nothing, so it is skipped (``not_sampled`` says how busy it was).
    """

    root: int
    seen: set[int] = field(default_factory=set)
    not_sampled: dict[int, ParentLooks] = field(default_factory=dict)  # parents not (yet) sampled
    cmdlines: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cmdlines[self.root] = cmdline(self.root)

    def look(self, now: float) -> list[tuple[int, list[int]]] | None:
        """(pid, chain from the root down to it) of each process to start sampling now;
        None when the root is gone. ``now`` is monotonic seconds."""
        tree = descendants(self.root)
        if tree is None:
            return None
        parents = set(tree.values())
        found = []
        for pid in (self.root, *tree):
            if pid in self.seen:
                continue
            if pid in parents:
                looks = self.not_sampled.setdefault(pid, ParentLooks())
                # two busy looks in a row: a master that just forked its workers is not busy
                if not looks.busy_twice(now, cpu_seconds(pid)):
                    continue
                del self.not_sampled[pid]
            self.seen.add(pid)
            chain = [pid]
            while chain[0] != self.root and chain[0] in tree:
                chain.insert(0, tree[chain[0]])
            for c in chain:
                if c not in self.cmdlines:
                    self.cmdlines[c] = cmdline(c)
            found.append((pid, chain))
        return found
