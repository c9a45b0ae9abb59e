"""The target of a run: a reference service the harness starts, or a service it is pointed at.

Starting the reference service, waiting for it, finding a local target's processes
(so that an external service on this machine can still be sampled and profiled),
and stopping whole process trees so that nothing is left behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import psutil

from harness.run import children
from harness.run.faultfile import load_fault_file

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class TargetError(Exception):
    """The target could not be started or reached."""


@dataclass(frozen=True)
class ServeOptions:
    """How to start the reference service (``--serve reference``)."""

    workers: int = 2
    worker_class: str = "sync"
    threads: int = 1
    store: str = "sqlite"
    redis_url: str | None = None
    faults: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    port: int = 0
    ready_timeout_s: float = 60.0
    record_traffic: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise ValueError(f"service workers must be between 1 and 64 (got {self.workers})")
        if self.worker_class not in ("sync", "gthread"):
            raise ValueError(f"worker class must be sync or gthread (got {self.worker_class!r})")
        if not 1 <= self.threads <= 256:
            raise ValueError(f"service threads must be between 1 and 256 (got {self.threads})")
        if self.store not in ("sqlite", "redis"):
            raise ValueError(f"store must be sqlite or redis (got {self.store!r})")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535 (got {self.port})")
        if self.faults is not None:
            if not Path(self.faults).is_file():
                raise ValueError(f"fault config file not found (got {self.faults!r})")
            load_fault_file(self.faults)  # FaultFileError (a ValueError) names the rule, value

    def fault_config(self) -> dict[str, object] | None:
        """The injected faults as configured (what diagnosis and reports show)."""
        if self.faults is None:
            return None
        return load_fault_file(self.faults)

    def describe(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "worker_class": self.worker_class,
            "threads": self.threads,
            "store": self.store,
            "faults": self.fault_config(),
            "faults_file": str(Path(self.faults).resolve()) if self.faults else None,
            "versions": dict(self.versions),
            "record_traffic": self.record_traffic,
        }


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def stop_process_tree(proc: subprocess.Popen[bytes] | int, timeout_s: float = 10.0) -> None:
    """SIGTERM a process, its process group and all its descendants, then SIGKILL what is
    left after the timeout (harness.run.children.stop_group)."""
    children.stop_group(proc, timeout_s=timeout_s)


_URL_RULE = "target must be an http:// or https:// URL with a host and a port in 1-65535"


def check_target_url(url: str) -> tuple[str, int]:
    """(host, port) of a target URL; ValueError naming the rule and the value otherwise
    (``http://127.0.0.1:99999`` and ``http://[::1`` raised from deep in urllib before)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{_URL_RULE} (got {url!r}: {exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise ValueError(f"{_URL_RULE} (got {url!r})")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Raise TargetError when nothing accepts TCP connections at the URL's host and port."""
    try:
        host, port = check_target_url(url)
    except ValueError as exc:
        raise TargetError(str(exc)) from None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise TargetError(f"target {url} is not reachable: {exc.strerror or exc}") from None


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def find_local_service_pid(url: str) -> int | None:
    """The top process of the tree listening on the URL's port on this machine, or None.

    gunicorn's workers inherit the master's listening socket, so several processes hold
    it: the answer is the holder whose parent does not hold it too (the master).
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    holders = _listening_holders_procfs(port)
    if holders is None:  # no /proc/net (not Linux): psutil's portable, slower table
        holders = _listening_holders_psutil(port)
    if not holders:
        return None
    for pid in sorted(holders):
        try:
            parent = psutil.Process(pid).ppid()
        except psutil.Error:
            continue
        if parent not in holders:
            return pid
    return min(holders)


def _listening_holders_procfs(port: int) -> set[int] | None:
    """Pids holding a TCP socket listening on ``port``, from /proc; None where /proc is absent.

    psutil.net_connections() decodes every socket on the host (tens of thousands of
    TIME_WAIT entries after a load test: ~1 CPU-second); this reads only the LISTEN lines.
    """
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    want = f":{port:04X}"
    inodes: set[str] = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... uid timeout inode
            if len(fields) > 9 and fields[3] == "0A" and fields[1].endswith(want):
                inodes.add(fields[9])
    if not inodes:
        return set()
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:  # gone, or not ours to read
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        holders.add(int(entry.name))
                        break
                except OSError:
                    continue
    return holders


def _listening_holders_psutil(port: int) -> set[int]:
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return set()
    return {
        c.pid for c in conns
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }


@dataclass
class ServedTarget:
    """A reference service started by the harness; ``stop()`` leaves no process behind."""

    url: str
    process: subprocess.Popen[bytes]
    options: ServeOptions
    log: IO[bytes]
    redis: object | None = None
    startup_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        from reference_service import launch

        stop_process_tree(self.process)
        launch.cleanup(self.env)
        if self.redis is not None:
            stop = getattr(self.redis, "stop", None)
            if callable(stop):
                stop()
        self.log.close()


def serve_reference(options: ServeOptions, log_path: Path,
                    env: dict[str, str] | None = None) -> ServedTarget:
    """Start the reference service under gunicorn on 127.0.0.1 and wait for /readyz;
    ``env``: variables the run's collectors need in the service (an OTLP endpoint)."""
    from reference_service import launch  # the service package is optional for external targets

    port = options.port or free_port()
    if options.port and not port_is_free(port):
        raise TargetError(f"port {port} on 127.0.0.1 is already in use")
    redis = None
    redis_url = options.redis_url
    if options.store == "redis" and redis_url is None:
        from reference_service import redis_server

        redis = redis_server.start_with_features()
        redis_url = redis.url
    argv, extra_env = launch.gunicorn_command(
        port=port,
        workers=options.workers,
        worker_class=options.worker_class,
        threads=options.threads,
        store=options.store,
        redis_url=redis_url,
        faults=options.faults,
        default_versions=dict(options.versions) or None,
        record_traffic=options.record_traffic,
    )
    log = open(log_path, "ab")  # noqa: SIM115 - closed by ServedTarget.stop
    started = time.monotonic()
    # A process group of its own, stopped whatever happens (harness.run.children)
    proc = children.spawn(argv, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, **extra_env, **(env or {})})
    target = ServedTarget(
        url=f"http://127.0.0.1:{port}", process=proc, options=options, log=log, redis=redis,
        env=extra_env,
    )
    try:
        _wait_ready(target, options.ready_timeout_s, log_path)
    except BaseException:
        target.stop()
        raise
    target.startup_s = time.monotonic() - started
    return target


def _wait_ready(target: ServedTarget, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not target.alive():
            raise TargetError(
                f"the reference service exited with code {target.process.returncode} before it "
                f"became ready; last lines of {log_path}:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(target.url + "/readyz", timeout=2.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.1)
    raise TargetError(
        f"the reference service did not become ready within {timeout_s:.0f} s (last /readyz: "
        f"{last}); last lines of {log_path}:\n{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
