"""Hosts on one machine: Linux network namespaces joined by a bridge, for distributed tests.

:class:`Hosts` makes one namespace per name, each with its own loopback and one veth
interface whose other end sits on a bridge in the root namespace, all in one private
/24 (``10.201.X.0/24``, X from the pid). Processes started with :meth:`Hosts.popen` run
inside a namespace (``ip netns exec``): they see only their own interfaces, reach the
others by address, and cannot reach each other's 127.0.0.1, as on separate hosts. What
they share with each other is the kernel (clocks, CPU): clocks of separate hosts are
simulated where a test needs them (HARNESS_WORKER_CLOCK_SKEW_S).

Needs root and ``ip`` (iproute2); :func:`unavailable` says why not when they are missing,
for a skip that names the reason. Everything made is removed on :meth:`close`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["Hosts", "copy_with_version", "unavailable"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"hprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Hosts:
    """Named network namespaces on one bridge: ``hosts.addr("master")`` -> its address."""

    def __init__(self, names: list[str]) -> None:
        tag = os.getpid() % 10000
        self.bridge = f"hbr{tag}"
        self.subnet = f"10.201.{os.getpid() % 250}"
        self.ns: dict[str, str] = {}
        self.addrs: dict[str, str] = {}
        self._veths: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(names, start=1):
                self._add(name, i, tag)
        except BaseException:
            self.close()
            raise

    def _add(self, name: str, i: int, tag: int) -> None:
        ns, veth = f"h{tag}{name}"[:30], f"hv{tag}x{i}"
        _ip("netns", "add", ns)
        self.ns[name] = ns
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._veths.append(veth)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        addr = f"{self.subnet}.{i}"
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{addr}/24", "dev", "eth0"),
                     ("link", "set", "eth0", "up")):
            _ip("-n", ns, *args)
        self.addrs[name] = addr

    def addr(self, name: str) -> str:
        return self.addrs[name]

    def command(self, name: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[name], *argv]

    def popen(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(name, argv), **kw)

    def run(self, name: str, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(self.command(name, argv), **kw)

    def close(self) -> None:
        for ns in self.ns.values():
            # whatever still runs in it (a test that failed half-way)
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            _ip("netns", "del", ns, check=False)
        for veth in self._veths:
            _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)


def copy_with_version(root: Path, dest: Path, version: str) -> Path:
    """A copy of the harness package whose ``__version__`` is ``version`` (another
    release, as a host with an older install has it); its directory for PYTHONPATH."""
    shutil.copytree(root / "harness", dest / "harness",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = dest / "harness" / "__init__.py"
    text = init.read_text()
    init.write_text(text.replace('__version__ = "', f'__version__ = "{version}" #', 1))
    return dest
