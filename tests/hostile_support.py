"""Helpers of the hostile-input tests: `harness run` as a process whose every descendant is
watched, and the misbehaving target (tests/misbehaving_server.py).

A run is started in a session of its own, so its process group is the test's to check;
a thread notes every descendant it sees while the run goes (the driver and the service
the harness starts live in sessions of their own, so the group alone would miss them),
and :meth:`WatchedRun.left` lists those still running afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
MISBEHAVING = ROOT / "tests" / "misbehaving_server.py"
WALLCLOCK = ROOT / "tests" / "wallclock"


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return "?"


def running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class WatchedRun:
    """``harness ARGS`` in its own session; every descendant it ever had is remembered."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        if args[:1] == ("run",) and "--warmup" not in args:
            # no warm-up unless a test asks: the tests compare load.json's counts with the
            # target's own count of every request it served, and the measured window is
            # the whole load only without one (the default is 2 s)
            args = (*args, "--warmup", "0s")
        self.args = args
        self.began = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
            env={**os.environ, **(env or {})})
        self.seen: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}  # pid -> command line, read when first seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.out = self.err = ""
        self.wall_s = 0.0

    def _watch(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                for child in root.children(recursive=True):
                    if child.pid not in self.seen:
                        self.seen[child.pid] = child
                        self.commands[child.pid] = "?"
                    # Read again at every look, not once: a child seen between fork and
                    # exec still shows its parent's command line (the load driver once
                    # looked like a second `harness run`, and find() missed it).
                    now = cmdline(self.seen[child.pid])
                    if now and now != "?":
                        self.commands[child.pid] = now
            except psutil.NoSuchProcess:
                return
            self._stop.wait(0.1)

    def cmdlines(self) -> str:
        return "\n".join(self.commands.values())

    def find(self, *words: str, but: str | None = None) -> list[psutil.Process]:
        """Descendants whose command line holds every word (and not ``but``)."""
        return [self.seen[pid] for pid, cmd in list(self.commands.items())
                if all(w in cmd for w in words) and (but is None or but not in cmd)]

    def wait_for(self, what: str, timeout_s: float, ready: Any) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended before {what}: {self.finish()}")
            time.sleep(0.1)
        raise AssertionError(f"{what} did not happen within {timeout_s} s")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout_s: float = 120) -> tuple[int, str, str]:
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            for p in self.seen.values():
                if running(p):
                    p.kill()
            self.out, self.err = self.proc.communicate()
            raise AssertionError(f"harness {' '.join(self.args)} did not end within "
                                 f"{timeout_s} s:\n{self.err[-3000:]}") from None
        finally:
            self._stop.set()
            self.wall_s = time.monotonic() - self.began
        return self.proc.returncode, self.out, self.err

    def left(self, grace_s: float = 5.0) -> list[str]:
        """Processes of the run still running ``grace_s`` after it ended (its own process
        group included), as "pid cmdline"."""
        group = [p for p in psutil.process_iter() if _pgid(p.pid) == self.proc.pid]
        procs = list({p.pid: p for p in [*self.seen.values(), *group]}.values())
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        return [f"{p.pid} {cmdline(p)}" for p in alive if running(p)]

    def run_dir(self) -> Path:
        for line in (self.out + self.err).splitlines():
            for marker in ("run directory: ", "run directory (marked failed): "):
                if line.startswith(marker):
                    return Path(line.split(marker, 1)[1].split("  (status")[0].strip())
        raise AssertionError(f"no run directory in the output:\n{self.out}\n{self.err}")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def start_target(tmp: Path, *args: str) -> tuple[subprocess.Popen[str], str, Path]:
    """The misbehaving server with ``args``; (process, base URL, its truth log)."""
    log = tmp / "truth.json"
    proc = subprocess.Popen([sys.executable, str(MISBEHAVING), "--port", "0", "--print-port",
                             "--log", str(log), *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.strip().isdigit(), line
    return proc, f"http://127.0.0.1:{line.strip()}", log


def truth(log: Path) -> dict[str, int]:
    return json.loads(log.read_text()) if log.exists() else {}


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.kill()
    proc.wait()
