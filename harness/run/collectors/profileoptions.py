"""The profile collector's options: what ``harness run --profile*`` and ``RunOptions``
accept, checked when given (errors "X must be ... (got ...)")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.run.collectors.stagemap import load_stage_map

__all__ = ["DEFAULT_RATE_HZ", "DEFAULT_VIEWS", "MAX_RATE_HZ", "OPTION_KEYS", "VIEWS",
           "ProfileOptions", "check_bool", "check_rate", "check_timeout", "check_views"]

VIEWS = ("oncpu", "wall")
DEFAULT_RATE_HZ = 20  # measured: keeps the capacity cost within 5 % (docs/collectors.md)
DEFAULT_VIEWS = ("oncpu",)
MAX_RATE_HZ = 1000
OPTION_KEYS = {"rate_hz", "views", "wall", "pyspy", "stage_map", "nonblocking",
               "stop_timeout_s"}


def check_rate(rate_hz: object) -> int:
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, int):
        raise ValueError(f"profile rate_hz must be an integer (got {rate_hz!r})")
    if not 1 <= rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"profile rate_hz must be between 1 and {MAX_RATE_HZ} (got {rate_hz!r})")
    return rate_hz


def check_bool(label: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"profile option {label} must be true or false (got {value!r})")
    return value


def check_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"profile stop_timeout_s must be > 0 (got {value!r})")
    return float(value)


def check_views(views: object) -> tuple[str, ...]:
    if isinstance(views, str) or not isinstance(views, Sequence) or not views:
        raise ValueError(
            f"profile views must be a non-empty list from {list(VIEWS)} (got {views!r})")
    bad = [v for v in views if v not in VIEWS]
    if bad or len(set(views)) != len(views):
        raise ValueError(f"profile views must be distinct names from {list(VIEWS)} (got {views!r})")
    return tuple(views)


@dataclass(frozen=True)
class ProfileOptions:
    """Options of the profile collector; None leaves the collector's default.

    Attributes:
        rate_hz: py-spy samples per second (1-1000; default 20).
        wall: also record the wall-clock view (idle and waiting frames).
        pyspy: path of the py-spy executable (default: beside the interpreter, then PATH).
        stage_map: a stage map file or a bundled map's name (checked when built); None: the
            served service's map, or the bundled map that explains the profile best.
        views: the views, from ``oncpu`` and ``wall`` (default: oncpu, plus wall with ``wall``).
        nonblocking: run py-spy with --nonblocking (default; always with two views); False
            is py-spy's blocking mode (it stops the process at each sample).
        stop_timeout_s: how long py-spy may take to write its output after SIGINT.
    """

    rate_hz: int | None = None
    wall: bool = False
    pyspy: str | None = None
    stage_map: str | None = None
    views: tuple[str, ...] | None = None
    nonblocking: bool | None = None
    stop_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.rate_hz is not None:
            check_rate(self.rate_hz)
        check_bool("wall", self.wall)
        if self.views is not None:
            object.__setattr__(self, "views", check_views(self.views))
        if self.nonblocking is not None:
            check_bool("nonblocking", self.nonblocking)
        if self.stop_timeout_s is not None:
            check_timeout(self.stop_timeout_s)
        if self.pyspy is not None and not isinstance(self.pyspy, str):
            raise ValueError(f"profile pyspy must be a path (got {self.pyspy!r})")
        if self.stage_map is not None:
            load_stage_map(self.stage_map)  # a bad map fails now, not after the run
