"""Collectors: one module per collector behind one small interface (see base.py), each
declared once by a ``CollectorSpec`` and listed in registry.py.

Submodules are imported on first use: the ``harness`` command builds its parsers for every
command and should not pay for psutil and py-spy handling unless it runs a load.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Collector", "CollectorContext", "CollectorSpec", "ProfileCollector",
           "ResourcesCollector"]

_WHERE = {
    "Collector": "base",
    "CollectorContext": "base",
    "CollectorSpec": "base",
    "ProfileCollector": "profile",
    "ResourcesCollector": "resources",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.run.collectors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"harness.run.collectors.{module}"), name)
