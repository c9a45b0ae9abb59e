"""Collectors: one module per collector behind one small interface (see base.py).

Submodules are imported on first use, so ``harness.load.recorder`` in the
load driver does not pull in psutil or py-spy handling.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Collector", "CollectorContext", "ProfileCollector", "ResourcesCollector"]

_WHERE = {
    "Collector": "base",
    "CollectorContext": "base",
    "ProfileCollector": "profile",
    "ResourcesCollector": "resources",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.run.collectors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"harness.run.collectors.{module}"), name)
