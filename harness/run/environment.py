"""What machine and software a run happened on (run.json ``environment``).

Recorded so that a run analysed later, elsewhere, can be compared with care: a
different CPU, a dirty checkout or another Locust version explains many "regressions".
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

__all__ = ["KEY_PACKAGES", "collect_environment", "usable_cpus"]

KEY_PACKAGES = ("locust", "hdrhistogram", "psutil", "py-spy", "flask", "scikit-learn", "numpy",
                "gunicorn")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=3.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> dict[str, Any]:
    """CPUs this process may actually use: affinity mask and cgroup (container) quota.

    ``os.cpu_count()`` reports the host's CPUs even inside a container limited to
    one; a load test that assumes the larger number misreads CPU saturation.
    """
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    quota: float | None = None
    try:  # cgroup v2: "max 100000" (unlimited) or "200000 100000" (2 CPUs)
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if limit != "max":
            quota = round(int(limit) / int(period), 3)
    except (OSError, ValueError):
        pass
    return {"affinity": affinity, "cgroup_quota": quota}


def collect_environment() -> dict[str, Any]:
    """Where the run happened: host, OS, CPUs, memory, Python, key packages, harness commit."""
    packages: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    checkout = Path(__file__).resolve().parents[2]
    commit = _git(["rev-parse", "HEAD"], checkout)
    git = None
    if commit:
        porcelain = _git(["status", "--porcelain", "--untracked-files=no"], checkout)
        git = {"commit": commit, "dirty": bool(porcelain) if porcelain is not None else None}
    try:
        load_avg: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load_avg = None
    return {
        "hostname": socket.gethostname(),
        "os": {"system": platform.system(), "release": platform.release(),
               "platform": platform.platform()},
        "cpu_model": _cpu_model(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_usable": usable_cpus(),
        "memory_bytes": psutil.virtual_memory().total,
        "load_avg_at_start": load_avg,
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": packages,
        "git": git,
    }
