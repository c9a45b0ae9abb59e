"""The Locust side shared by the scenario locustfiles: option flags, checks before any
traffic, the selected load shape, and sending a request with its tags and outcome.

Works under plain ``locust`` (flags parsed by Locust, ``events.init`` fired) and under the
harness driver (Environment built as a library: no parsed options, possibly no ``init``),
where the environment variables carry the options and are checked at import.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Sequence
from typing import Any

from locust import FastHttpUser, LoadTestShape, events
from locust.runners import WorkerRunner

from harness.load.shapes import Shape
from scenarios.options import Option, ScenarioOptionError, resolve
from scenarios.traffic import Request, TrafficModel, TrafficModelError

log = logging.getLogger("scenarios")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_ATTR = "_scenario_values"


def fail(message: str) -> SystemExit:
    """What a locustfile raises for a bad option: SystemExit with one line, so plain
    ``locust`` prints it without a traceback and the harness driver reports it (exit 2).
    Also logged: raised in a user greenlet (a driver that fires no ``init``), gevent
    reports only the exception type."""
    log.error("scenario error: %s", message)
    return SystemExit(f"scenario error: {message}")


def setup(groups: Sequence[Option], required: Sequence[str] = ()) -> dict[str, Any]:
    """Register the flags, check the environment variables now (import time), and check
    flags + variables again at ``init``. Returns the environment-only values."""

    @events.init_command_line_parser.add_listener
    def _flags(parser: Any, **_kw: Any) -> None:
        for opt in groups:
            try:
                parser.add_argument(opt.flag, type=str, default=None,
                                    help=f"{opt.help} [env {opt.env}]")
            except argparse.ArgumentError:
                pass  # two scenario files in one run (-f a.py,b.py) share the flags

    @events.init.add_listener
    def _init(environment: Any, **_kw: Any) -> None:
        values = values_for(environment, groups, required)
        shape = values.get("shape")
        if shape is not None and environment.shape_class is None \
                and not isinstance(environment.runner, WorkerRunner):
            install_shape(environment, shape)

    try:
        return resolve(groups)
    except ScenarioOptionError as exc:
        raise fail(str(exc)) from None


def values_for(environment: Any, groups: Sequence[Option],
               required: Sequence[str] = ()) -> dict[str, Any]:
    """The options of this run, checked once per environment (flags over variables)."""
    cached = getattr(environment, _ATTR, None)
    if cached is None:
        try:
            cached = resolve(groups, getattr(environment, "parsed_options", None),
                             required=required)
        except ScenarioOptionError as exc:
            raise fail(str(exc)) from None
        setattr(environment, _ATTR, cached)
    return cached


def traffic_model(environment: Any, values: dict[str, Any]) -> TrafficModel:
    """The run's traffic model, built once per environment (artifacts, else the service)."""
    model = getattr(environment, "_scenario_traffic", None)
    if model is not None:
        return model
    kw = {"seed": values["traffic_seed"], "zipf_s": values["zipf"],
          "mix": values["model_mix"], "versions": values["model_versions"] or {},
          "max_batch": values["max_batch"]}
    try:
        try:
            model = TrafficModel.from_artifacts(values["artifacts"], **kw)
        except TrafficModelError:
            if values["artifacts"] or not environment.host:
                raise
            log.warning("artifacts not found locally; reading the schema from %s/v1/models "
                        "(approximate feature distributions)", environment.host)
            model = TrafficModel.from_service(environment.host, **kw)
    except TrafficModelError as exc:
        raise fail(str(exc)) from None
    environment._scenario_traffic = model
    return model


def user_index(environment: Any) -> tuple[int, int]:
    """(worker index, index of this user in its process): the seed of its stream."""
    runner = environment.runner
    worker = int(getattr(runner, "worker_index", 0) or 0) if runner is not None else 0
    n = getattr(environment, "_scenario_users", 0)
    environment._scenario_users = n + 1
    return worker, n


def send(user: Any, req: Request, input_class: str, rejections: frozenset[int]) -> int:
    """POST a traffic-model request; see :func:`send_raw`."""
    return send_raw(user, "POST", req.path, req.payload(), JSON_HEADERS, req.name,
                    input_class, rejections)


def send_raw(user: Any, method: str, path: str, body: bytes | None, headers: dict[str, str],
             name: str, input_class: str, rejections: frozenset[int]) -> int:
    """Send one request tagged ``input_class``. A status in ``rejections`` counts as a
    success with ``outcome=rejected`` (the service refused the input, as it should); 2xx
    is ``accepted``; anything else fails as Locust decides. Returns the status (0: none)."""
    with user.client.request(method, path, data=body, headers=headers, name=name,
                             context={"input_class": input_class},
                             catch_response=True) as resp:
        status = resp.status_code or 0
        ctx = resp.request_meta["context"]
        if 200 <= status < 300:
            ctx["outcome"] = "accepted"
        elif status in rejections:
            ctx["outcome"] = "rejected"
            resp.success()
        else:
            ctx["outcome"] = "failed"
    return status


class ProfileShape(LoadTestShape):
    """User count over time from a :class:`harness.load.shapes.Shape` (closed model)."""

    abstract = True
    shape: Shape

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.shape.duration_s:
            return None
        users = self.shape.users_at(t)
        # Reach each new level within about a second, as the profile asks.
        current = self.runner.user_count if self.runner is not None else 0
        return users, float(max(1, abs(users - current)))


def shape_class(shape: Shape) -> type[ProfileShape]:
    return type(f"{shape.kind.capitalize()}Shape", (ProfileShape,),
                {"shape": shape, "abstract": False})


def install_shape(environment: Any, shape: Shape) -> None:
    instance = shape_class(shape)()
    instance.runner = environment.runner
    environment.shape_class = instance
    log.info("load shape %s (%.0f s)", shape.spec(), shape.duration_s)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise fail(message)


__all__ = ["fail", "setup", "values_for", "traffic_model", "user_index", "send", "send_raw",
           "ProfileShape", "shape_class", "install_shape", "check", "ScenarioOptionError",
           "TrafficModelError"]


class TrafficUser(FastHttpUser):
    """A user drawing its requests from the shared traffic model: its own seeded stream
    and exponential think times (``think_time``). Subclasses set ``groups`` (the option
    groups they read) and may extend ``on_start`` (``self.values``, ``self.worker`` and
    ``self.index`` are set here)."""

    abstract = True
    groups: Sequence[Option] = ()

    def on_start(self) -> None:
        self.values = values_for(self.environment, self.groups)
        model = traffic_model(self.environment, self.values)
        self.worker, self.index = user_index(self.environment)
        self.stream = model.stream(self.index, self.worker)
        seed = self.values["traffic_seed"]
        self.pause_rng = random.Random(f"pause:{seed}:{self.worker}:{self.index}")
        self.think_time = self.values["think_time"]

    def wait_time(self) -> float:
        if self.think_time <= 0:
            return 0.0
        return self.pause_rng.expovariate(1.0 / self.think_time)
