"""The user's locustfile as Locust objects: its User classes, its options, the Environment.

Shared by every role of the driver (local, master, worker; harness/load/runloop.py runs
them). A locustfile that cannot be used raises :class:`LocustfileError` with one line
that says why; the driver prints it and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

import locust
from locust import User
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.util.load_locustfile import load_locustfile

from harness.load.config import ConfigError, DriverConfig

__all__ = ["LocustfileError", "apply_request_timeout", "fire_init", "load_user_classes",
           "locust_options", "make_environment"]


class LocustfileError(ValueError):
    """The locustfile cannot be used (import failed, no User class, unknown class)."""


def load_user_classes(
    locustfile: str, selected: tuple[str, ...] | list[str] = ()
) -> tuple[list[type[User]], Any]:
    """(user classes, shape instance or None) from a plain locustfile."""
    if not Path(locustfile).is_file():
        raise LocustfileError(f"locustfile must be an existing file (got {locustfile!r})")
    try:
        classes, shapes = load_locustfile(str(Path(locustfile).resolve()))
    except (Exception, SystemExit) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise LocustfileError(
            f"locustfile {locustfile} failed to import: {type(exc).__name__}: {detail}"
        ) from None
    if not classes:
        raise LocustfileError(f"locustfile {locustfile} defines no User class")
    if selected:
        missing = [name for name in selected if name not in classes]
        if missing:
            raise LocustfileError(
                f"user_classes must name User classes of the locustfile (got {missing}; "
                f"available: {sorted(classes)})"
            )
        chosen = [classes[name] for name in selected]
    else:
        chosen = list(classes.values())
    return chosen, (shapes[0] if shapes else None)


def apply_request_timeout(classes: list[type[User]], seconds: float) -> None:
    """Bound every FastHttpUser request by ``seconds`` unless its class chose a timeout,
    and each request as a whole (harness/load/requestbounds.py).

    Locust's default is 60 s: against a target that accepts and never answers, each user
    would block for the whole of a short run and its requests would never be counted. With a
    bound they fail as timeouts, counted by type like any other error. Locust's timeouts are
    per socket operation: a target that trickles its answer is cut by the whole-request
    deadline (the same ``seconds``, or the class's own longer timeouts).
    """
    from locust.contrib.fasthttp import FastHttpUser

    from harness.load.requestbounds import bound_requests

    fast = [cls for cls in classes if issubclass(cls, FastHttpUser)]
    for cls in fast:
        for attr in ("network_timeout", "connection_timeout"):
            if getattr(cls, attr) == getattr(FastHttpUser, attr):
                setattr(cls, attr, float(seconds))
    bound_requests(fast, seconds)


def locust_options(locust_args: tuple[str, ...] | list[str]) -> argparse.Namespace:
    """Locust's options plus the locustfile's own (``events.init_command_line_parser``),
    as ``environment.parsed_options``; call after the locustfile was imported."""
    parser = get_parser(default_config_files=[])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(args=["--headless", *locust_args])
    except SystemExit:
        last = (err.getvalue().strip().splitlines() or ["invalid arguments"])[-1]
        raise ConfigError(f"locust_args must be options the locustfile or Locust accepts "
                          f"(got {list(locust_args)!r}: {last})") from None


def make_environment(config: DriverConfig, classes: list[type[User]], shape: Any) -> Environment:
    """The Locust Environment, on Locust's global event hooks: a locustfile registers its
    listeners (``events.init``, ``events.test_start``...) on ``locust.events`` at import."""
    return Environment(user_classes=classes,
                       shape_class=None if config.open_model else shape,
                       host=config.host, stop_timeout=config.stop_grace_s,
                       events=locust.events,
                       parsed_options=locust_options(config.locust_args))


def fire_init(env: Environment) -> None:
    """Fire ``events.init`` as ``locust`` does after creating the runner; a locustfile that
    rejects its options there (an exception or ``sys.exit``) is an invalid locustfile."""
    try:
        env.events.init.fire(environment=env, runner=env.runner, web_ui=None)
    except SystemExit as exc:
        raise LocustfileError(f"the locustfile refused to start: {exc.code}") from None
    except Exception as exc:
        raise LocustfileError(f"the locustfile's init failed: {exc}") from None
