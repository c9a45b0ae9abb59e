"""What ``harness run`` is asked to do (:class:`RunOptions`), and what it answers.

Options are checked when built, so a command that cannot run creates nothing. The
collectors' options are a mapping of collector name to that collector's own options
(``harness.run.collectors.registry``): the orchestrator knows no collector by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.load.config import check_scale
from harness.run.collectors import registry
from harness.run.target import ServeOptions, check_target_url

__all__ = ["DEFAULT_MASTER_PORT", "EXIT_DEGRADED", "EXIT_INTERRUPTED", "EXIT_OK",
           "EXIT_START_FAILED", "RunError", "master_address",
           "RunOptions", "RunResult"]

EXIT_OK = 0
EXIT_START_FAILED = 2
EXIT_DEGRADED = 3
EXIT_INTERRUPTED = 130
DEFAULT_MASTER_PORT = 5557  # Locust's master port: what firewalls for Locust already open


def master_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT`` too) of --master-bind / --master; ValueError naming the
    rule and the value."""
    rule = "must be ADDRESS:PORT with a port 1-65535, e.g. 0.0.0.0:5557 or 10.0.0.5:5557"
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 \
            or any(c.isspace() for c in host):
        raise ValueError(f"the master address {rule} (got {text!r})")
    return host, int(port)


class RunError(Exception):
    """The run could not start; nothing was measured (the run directory says why)."""

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


@dataclass(frozen=True)
class RunOptions:
    """Everything ``harness run`` was asked to do. Checked when built.

    ``collectors`` maps a collector's name to its options (its options class, a mapping of
    its fields, True for its defaults, False or None to turn it off); collectors it does
    not name run with their defaults when they are on by default. After checking it holds
    every registered collector: name -> options, or None when off.
    ``RunOptions(..., collectors={"profile": None})`` is a run without py-spy.
    """

    scenario: Path
    target: str | None = None
    serve: str | None = None
    serve_options: ServeOptions = field(default_factory=ServeOptions)
    users: int | None = None
    spawn_rate: float | None = None
    rate: float | None = None
    rate_shape: str | None = None
    arrival: str = "poisson"
    duration_s: float = 60.0
    warmup_s: float = 2.0  # start-up (users, connections, caches) out of the numbers
    interval_s: float = 1.0
    workers: int = 0
    #: of ``workers``, how many connect from other hosts (``harness worker --master``)
    remote_workers: int = 0
    #: where the master listens for workers (default 127.0.0.1 and a free port; with remote
    #: workers 0.0.0.0:5557, Locust's port)
    master_bind: str | None = None
    expect_workers_timeout_s: float = 60.0
    collectors: Mapping[str, Any] = field(default_factory=dict)
    out: Path = Path("runs")
    tags: dict[str, str] = field(default_factory=dict)
    tag_keys: tuple[str, ...] = ("input_class",)
    user_classes: tuple[str, ...] = ()
    seed: int = 1
    late_threshold_us: int = 1000
    request_timeout_s: float = 10.0
    service_total: str | None = None  # the Server-Timing entry that is the service's total
    #: how long the load driver may take to start the load (import the locustfile, run its
    #: init, connect its workers) before the run fails
    start_timeout_s: float = 60.0
    locust_args: tuple[str, ...] = ()
    record_traffic: bool = False
    #: the target is on another host: its processes are not looked for on this machine
    target_remote: bool = False
    command_line: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.scenario.is_file():
            raise ValueError(
                f"scenario must be an existing locustfile (got {str(self.scenario)!r})"
            )
        if self.scenario.suffix != ".py":
            raise ValueError(f"scenario must be a .py locustfile (got {str(self.scenario)!r})")
        if (self.target is None) == (self.serve is None):
            raise ValueError("give exactly one of --target URL or --serve reference")
        if self.serve is not None and self.serve != "reference":
            raise ValueError(f"--serve knows only 'reference' (got {self.serve!r})")
        if self.target is not None:
            check_target_url(self.target)
        self._check_load_model()
        self._check_timing()
        if self.target_remote and self.target is None:
            raise ValueError("--target-remote needs --target URL (a service the harness "
                             "serves is local)")
        if self.record_traffic and self.serve != "reference":
            raise ValueError("--record-traffic needs --serve reference (an external service "
                             "records its own traffic: see docs/scenarios.md)")
        # Collector options are checked now, not in the middle of the run.
        object.__setattr__(self, "collectors",
                           MappingProxyType(registry.resolve(self.collectors)))

    def _check_load_model(self) -> None:
        if self.rate is not None:
            if not (self.rate > 0 and math.isfinite(self.rate)):
                raise ValueError(f"rate must be > 0 requests/s (got {self.rate!r})")
            if self.spawn_rate is not None:
                raise ValueError("--spawn-rate belongs to the closed model; with --rate omit it")
        if self.rate_shape is not None:
            from harness.load.shapes import parse_shape

            if self.rate is not None:
                raise ValueError("give --rate or --rate-shape, not both (the shape sets the rate)")
            if self.spawn_rate is not None:
                raise ValueError("--spawn-rate belongs to the closed model; with --rate-shape "
                                 "omit it")
            peak = parse_shape(self.rate_shape).peak  # ValueError names the bad part
            if not peak > 0:
                raise ValueError(f"rate shape must reach a rate > 0 (got {self.rate_shape!r})")
        if self.arrival not in ("poisson", "constant"):
            raise ValueError(f"arrival must be poisson or constant (got {self.arrival!r})")
        if self.users is not None and self.users < 1:
            raise ValueError(f"users must be >= 1 (got {self.users})")
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise ValueError(f"spawn rate must be > 0 users/s (got {self.spawn_rate})")
        if not 0 <= self.workers <= 64:
            raise ValueError(f"workers must be between 0 and 64 (got {self.workers})")
        self._check_workers()
        if self.spawn_rate is not None and not math.isfinite(self.spawn_rate):
            raise ValueError(f"spawn rate must be a finite number of users/s "
                             f"(got {self.spawn_rate})")

    def _check_workers(self) -> None:
        if not 0 <= self.remote_workers <= self.workers:
            raise ValueError(f"--remote-workers must be between 0 and --workers "
                             f"({self.workers}) (got {self.remote_workers})")
        if self.remote_workers and self.serve is not None:
            raise ValueError("--remote-workers needs --target URL, an address the worker "
                             "hosts can reach (--serve reference listens on 127.0.0.1)")
        if self.master_bind is not None:
            if not self.workers:
                raise ValueError("--master-bind needs --workers N (the master listens for them)")
            master_address(self.master_bind)  # ValueError names the rule
        if not (1 <= self.expect_workers_timeout_s <= 3600
                and math.isfinite(self.expect_workers_timeout_s)):
            raise ValueError(f"--expect-workers-timeout must be between 1 and 3600 s "
                             f"(got {self.expect_workers_timeout_s})")

    def master(self) -> tuple[str, int]:
        """(address, port) the master listens on (port 0: a free one)."""
        if self.master_bind is not None:
            return master_address(self.master_bind)
        return ("0.0.0.0", DEFAULT_MASTER_PORT) if self.remote_workers else ("127.0.0.1", 0)

    def _check_timing(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration must be > 0 s (got {self.duration_s})")
        check_scale(users=self.users, workers=self.workers, rate=self.peak_rate,
                    duration_s=self.duration_s, warmup_s=self.warmup_s)
        if self.warmup_s < 0:
            raise ValueError(f"warmup must be >= 0 s (got {self.warmup_s})")
        if not 0.1 <= self.interval_s <= 60:
            raise ValueError(f"interval must be between 0.1 and 60 s (got {self.interval_s})")
        if not (0 < self.request_timeout_s <= 3600 and math.isfinite(self.request_timeout_s)):
            raise ValueError(f"request timeout must be > 0 and <= 3600 s "
                             f"(got {self.request_timeout_s})")
        if self.service_total is not None and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}",
                                                               self.service_total):
            raise ValueError(f"--service-total must be a Server-Timing entry name (a token) "
                             f"(got {self.service_total!r})")
        if not (1 <= self.start_timeout_s <= 3600 and math.isfinite(self.start_timeout_s)):
            raise ValueError(f"start timeout must be between 1 and 3600 s "
                             f"(got {self.start_timeout_s})")

    @property
    def model(self) -> str:
        return "open" if self.rate is not None or self.rate_shape is not None else "closed"

    @property
    def peak_rate(self) -> float | None:
        if self.rate_shape is not None:
            from harness.load.shapes import parse_shape

            return float(parse_shape(self.rate_shape).peak)
        return self.rate

    def pool_users(self) -> int:
        """Users that carry the load: given, or for the open model enough for rate x 1 s."""
        if self.users is not None:
            return self.users
        peak = self.peak_rate
        if peak is not None:
            return max(10, min(2000, math.ceil(peak)))
        return 10

    def describe_load(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "users": self.pool_users(),
            "spawn_rate": self.spawn_rate if self.model == "closed" else None,
            "rate": self.peak_rate,
            "rate_shape": self.rate_shape,
            "arrival": self.arrival if self.model == "open" else None,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "interval_s": self.interval_s,
            "workers": self.workers,
            "tags": dict(self.tags),
        }


@dataclass
class RunResult:
    run_dir: Path
    status: str
    exit_code: int
    summary: dict[str, Any] | None
    messages: list[str]
