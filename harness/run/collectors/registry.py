"""The registered collectors: which ones a run has, in which order, with which options.

Each collector module declares a :class:`~harness.run.collectors.base.CollectorSpec` named
``SPEC``; :data:`BUILTIN` lists them, in start order (stop order is the reverse). Adding a
collector is its module plus its line in ``BUILTIN`` (docs/collectors.md, "Adding a
collector"); a plugin or a test may :func:`register` one at run time instead.

``RunOptions.collectors`` maps a collector's name to its options; :func:`resolve` completes
it: a registered collector not named there runs with its default options when it is on by
default, and None means off. The ``harness run`` command adds every collector's flags with
:func:`add_flags` and reads them back with :func:`options_from_args`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from harness.run.collectors import nodemetrics, processmetrics, profile, prometheus, resources
from harness.run.collectors.base import CollectorSpec
from harness.run.collectors.traces import collector as traces

__all__ = ["BUILTIN", "add_flags", "get", "options_from_args", "register", "registered",
           "resolve", "unregister"]

#: the collectors of every run, in start order
BUILTIN: tuple[CollectorSpec[Any], ...] = (traces.SPEC, resources.SPEC, profile.SPEC,
                                           prometheus.SPEC, processmetrics.SPEC,
                                           nodemetrics.SPEC)

_REGISTRY: dict[str, CollectorSpec[Any]] = {}


def register(spec: CollectorSpec[Any]) -> None:
    """Add a collector after those registered before it; ValueError on a name taken."""
    if not isinstance(spec, CollectorSpec):
        raise ValueError(f"register takes a CollectorSpec (got {spec!r})")
    if spec.name in _REGISTRY:
        raise ValueError(f"collector name must be unique (got {spec.name!r}, registered: "
                         f"{sorted(_REGISTRY)})")
    _REGISTRY[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a collector registered with :func:`register` (a no-op for unknown names)."""
    _REGISTRY.pop(name, None)


def registered() -> tuple[CollectorSpec[Any], ...]:
    """Every registered collector, in start order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> CollectorSpec[Any]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"collector must be one of {sorted(_REGISTRY)} (got {name!r})") from None


def resolve(given: Mapping[str, object]) -> dict[str, Any]:
    """Every registered collector's name -> its checked options, or None when it is off.

    ``given`` names collectors by name with an options instance, a mapping of option
    fields, True (defaults) or False/None (off); the others get their defaults when they
    are on by default. ValueError names an unknown collector or a bad option.
    """
    if not isinstance(given, Mapping):
        raise ValueError(f"collectors must be a mapping of collector name to options "
                         f"(got {given!r})")
    unknown = sorted(set(given) - set(_REGISTRY))
    if unknown:
        raise ValueError(f"collectors must name registered collectors {sorted(_REGISTRY)} "
                         f"(got {unknown})")
    return {name: spec.check(given[name]) if name in given
            else spec.options() if spec.default_on else None
            for name, spec in _REGISTRY.items()}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One argument group per collector that has flags, titled by the collector."""
    for spec in _REGISTRY.values():
        if spec.add_flags is not None:
            spec.add_flags(parser.add_argument_group(spec.title or f"{spec.name} collector"))


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The collectors' options from ``harness run``'s parsed flags (None: turned off);
    collectors without flags are left out, so they keep their defaults."""
    return {spec.name: spec.from_args(args) for spec in _REGISTRY.values()
            if spec.from_args is not None}


for _spec in BUILTIN:
    register(_spec)
