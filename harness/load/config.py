"""The load driver's configuration (``driver.json``), checked when read.

Import-safe (no Locust): the orchestrator may validate a config before it starts the
driver. Keys and meaning are in docs/internals.md ("Driver config"); optional extras:
``stop_grace_s`` (default 2.0: how long in-flight requests may finish after the end) and
``local_workers`` (default ``workers``: how many of the workers the driver starts itself;
the others connect from other hosts) and ``request_timeout_s`` (default 10.0: a
FastHttpUser's connect and read timeout, unless its class sets its own).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["MAX_DURATION_S", "MAX_RATE", "MAX_USERS_PER_PROCESS", "ConfigError",
           "DriverConfig", "check_scale", "load_config", "rate_function"]

ARRIVALS = ("poisson", "constant")
MODELS = ("closed", "open")
#: users of one load-generating process. Measured: 3.5 KiB per idle Locust user (20,000
#: spawn in 3.7 s, 70 MB); one gevent loop saturates one core long before that many busy
#: users. 100,000,000 users grew a driver 100 MB/s and blocked its loop while spawning.
MAX_USERS_PER_PROCESS = 20_000
#: requests/s of a whole run: ~20x what one Locust process sends at best, so --workers
#: has room; the schedule draws each arrival (~1 us of CPU), and 1e12/s never ended.
MAX_RATE = 100_000.0
#: warm-up or measured time: a week of soak is the longest run anyone plans
MAX_DURATION_S = 7 * 24 * 3600.0


def check_scale(*, users: int | None, workers: int, rate: float | None,
                duration_s: float, warmup_s: float) -> None:
    """The bounds on a run's size (users, rate, durations); ValueError names the one passed."""
    per = max(1, workers)
    if users is not None and users > MAX_USERS_PER_PROCESS * per:
        raise ValueError(f"users must be <= {MAX_USERS_PER_PROCESS * per} "
                         f"({MAX_USERS_PER_PROCESS} per load-generating process, {per} "
                         f"process{'es' if per > 1 else ''}; got {users})")
    if rate is not None and rate > MAX_RATE:
        raise ValueError(f"rate must be <= {MAX_RATE:.0f} requests/s (got {rate:g})")
    for what, value in (("duration", duration_s), ("warmup", warmup_s)):
        if value > MAX_DURATION_S:
            raise ValueError(f"{what} must be <= {MAX_DURATION_S:.0f} s (7 days; got {value:g} s)")


class ConfigError(ValueError):
    """driver.json is unusable; the message names the key and the bad value."""


def _number(d: dict[str, Any], key: str, default: Any, *, minimum: float, strict: bool,
            integer: bool = False) -> Any:
    value = d.get(key, default)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        rule = f"{'an integer' if integer else 'a number'} {'>' if strict else '>='} {minimum:g}"
        raise ConfigError(f"{key} must be {rule} (got {value!r})")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class DriverConfig:
    locustfile: str
    run_dir: str
    host: str | None = None
    model: str = "closed"
    users: int = 1
    spawn_rate: float = 1.0
    rate: float | None = None
    arrival: str = "poisson"
    duration_s: float = 60.0
    warmup_s: float = 0.0
    interval_s: float = 1.0
    workers: int = 0
    tag_keys: tuple[str, ...] = ("input_class",)
    seed: int = 1
    user_classes: tuple[str, ...] = ()
    late_threshold_us: int = 1000
    master_host: str = "127.0.0.1"
    master_port: int = 0
    expect_workers_timeout_s: float = 30.0
    stop_grace_s: float = 2.0
    request_timeout_s: float = 10.0
    local_workers: int | None = None  # of ``workers``, started here (default: all)
    locust_args: tuple[str, ...] = ()  # the locustfile's own command-line options
    rate_shape: str | None = None  # open model: the rate follows this shape (scenarios/shapes.py)
    trace_sample: float | None = None  # --traces: traceparent on every request, this share sampled
    service_total: str | None = None  # --service-total: this Server-Timing entry is the total
    calibrate_requests: int = 200  # requests to the local echo before the load (0: none)
    unknown_keys: tuple[str, ...] = field(default=(), compare=False)

    @property
    def open_model(self) -> bool:
        return self.model == "open"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unknown_keys"}
        d["tag_keys"] = list(self.tag_keys)
        d["user_classes"] = list(self.user_classes)
        d["locust_args"] = list(self.locust_args)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriverConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"driver config must be a JSON object (got {type(d).__name__})")
        for key in ("locustfile", "run_dir"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ConfigError(f"{key} must be a non-empty path string (got {d.get(key)!r})")
        model, rate, users, workers = _load_model(d)
        host = d.get("host")
        if host is not None and (not isinstance(host, str) or "://" not in host):
            raise ConfigError(f"host must be a URL like http://127.0.0.1:8000 (got {host!r})")
        seed = d.get("seed", 1)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer (got {seed!r})")
        master_port = _number(d, "master_port", 0, minimum=0, strict=False, integer=True)
        if master_port > 65535:
            raise ConfigError(f"master_port must be 0..65535 (got {master_port})")
        try:
            check_scale(users=users, workers=workers, rate=rate,
                        duration_s=_number(d, "duration_s", 60.0, minimum=0, strict=True),
                        warmup_s=_number(d, "warmup_s", 0.0, minimum=0, strict=False))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            locustfile=d["locustfile"], run_dir=d["run_dir"], host=host, model=model,
            users=users, spawn_rate=_number(d, "spawn_rate", None, minimum=0, strict=True)
            or float(users), rate=rate, arrival=d.get("arrival") or "poisson",
            duration_s=_number(d, "duration_s", 60.0, minimum=0, strict=True),
            warmup_s=_number(d, "warmup_s", 0.0, minimum=0, strict=False),
            interval_s=_number(d, "interval_s", 1.0, minimum=0, strict=True),
            workers=workers, tag_keys=_names(d, "tag_keys", ["input_class"]), seed=seed,
            user_classes=_names(d, "user_classes", []),
            late_threshold_us=_number(d, "late_threshold_us", 1000, minimum=0, strict=False,
                                      integer=True),
            master_host=str(d.get("master_host") or "127.0.0.1"), master_port=master_port,
            expect_workers_timeout_s=_number(d, "expect_workers_timeout_s", 30.0, minimum=0,
                                             strict=True),
            stop_grace_s=_number(d, "stop_grace_s", 2.0, minimum=0, strict=False),
            request_timeout_s=_number(d, "request_timeout_s", 10.0, minimum=0, strict=True),
            local_workers=_local_workers(d, workers), locust_args=_locust_args(d),
            rate_shape=_rate_shape(d, model), trace_sample=_trace_sample(d),
            service_total=_service_total(d),
            calibrate_requests=_number(d, "calibrate_requests", 200, minimum=0, strict=False,
                                       integer=True),
            unknown_keys=tuple(sorted(set(d) - {f.name for f in fields(cls)})),
        )


def _load_model(d: dict[str, Any]) -> tuple[str, float | None, int, int]:
    """(model, rate, users, workers), checked together: the open model needs a rate, the
    closed one users, and in the open model every worker needs a user."""
    model = d.get("model") or ("open" if d.get("rate") is not None else "closed")
    if model not in MODELS:
        raise ConfigError(f"model must be one of {MODELS} (got {model!r})")
    rate = _number(d, "rate", None, minimum=0, strict=True)
    if model == "open" and rate is None:
        raise ConfigError("rate must be given (requests/s > 0) in the open model (got None)")
    arrival = d.get("arrival") or "poisson"
    if arrival not in ARRIVALS:
        raise ConfigError(f"arrival must be one of {ARRIVALS} (got {arrival!r})")
    users = _number(d, "users", None, minimum=1, strict=False, integer=True)
    if users is None:
        if model == "closed":
            raise ConfigError("users must be given (an integer >= 1) in the closed model")
        # Enough users for the schedule while responses take up to 1 s.
        users = max(1, math.ceil(rate))  # type: ignore[arg-type]
    workers = _number(d, "workers", 0, minimum=0, strict=False, integer=True)
    if model == "open" and workers and users < workers:
        raise ConfigError(f"users must be >= workers in the open model, or a worker has no "
                          f"user to carry its schedule (got users={users}, workers={workers})")
    return model, rate, users, workers


def _names(d: dict[str, Any], key: str, default: list[str]) -> tuple[str, ...]:
    items = d.get(key, default) or []
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise ConfigError(f"{key} must be a list of non-empty strings (got {items!r})")
    return tuple(items)


def _locust_args(d: dict[str, Any]) -> tuple[str, ...]:
    locust_args = d.get("locust_args") or []
    if not isinstance(locust_args, list) or not all(isinstance(x, str) for x in locust_args):
        raise ConfigError(f"locust_args must be a list of strings (got {locust_args!r})")
    return tuple(locust_args)


def _rate_shape(d: dict[str, Any], model: str) -> str | None:
    spec = d.get("rate_shape")
    if spec is None:
        return None
    if model != "open":
        raise ConfigError(f"rate_shape belongs to the open model (got model={model!r})")
    from harness.load.shapes import parse_shape

    try:
        parse_shape(spec)
    except ValueError as exc:
        raise ConfigError(f"rate_shape: {exc}") from None
    return str(spec)


def rate_function(spec: str | None, scale: float = 1.0) -> Callable[[float], float] | None:
    """requests/s at t seconds into the load for a shape spec (None: a constant rate)."""
    if spec is None:
        return None
    from harness.load.shapes import parse_shape

    shape = parse_shape(spec)
    # After the shape's own end the rate holds its last level (the run's --duration decides
    # when the load stops).
    last = max(0.0, shape.duration_s - 1e-6)
    return lambda t: shape.rate_at(min(t, last)) * scale


def _local_workers(d: dict[str, Any], workers: int) -> int | None:
    n = _number(d, "local_workers", None, minimum=0, strict=False, integer=True)
    if n is not None and n > workers:
        raise ConfigError(f"local_workers must be <= workers (got {n} > {workers})")
    return n


def load_config(path: Path | str) -> DriverConfig:
    """Read and check driver.json; ConfigError says what is wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"driver config must be a readable file (got {str(path)!r}: "
                          f"{exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"driver config must be valid JSON (got {str(path)!r}: {exc})") from None
    return DriverConfig.from_dict(raw)


def _trace_sample(d: dict[str, Any]) -> float | None:
    value = d.get("trace_sample")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"trace_sample must be a fraction in (0, 1] (got {value!r})")
    return float(value)


def _service_total(d: dict[str, Any]) -> str | None:
    value = d.get("service_total")
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 100 or value.strip() != value:
        raise ConfigError(f"service_total must be a Server-Timing entry name (got {value!r})")
    return value
