"""Traffic for the harness: the shared traffic model, OOD classes, load shapes, options,
and the locustfiles that use them (production.py, ood.py, replay.py; docs/scenarios.md).

Only the locustfiles and scenarios.common import Locust (it monkey-patches the standard
library); everything re-exported here is import-safe.
"""

from __future__ import annotations

from harness.load.shapes import KINDS as SHAPE_KINDS
from harness.load.shapes import Shape, parse_shape
from scenarios.ood_classes import CLASSES as OOD_CLASSES
from scenarios.ood_classes import make_ood
from scenarios.traffic import Request, TrafficModel, TrafficModelError, request_name

__all__ = ["OOD_CLASSES", "SHAPE_KINDS", "Request", "Shape", "TrafficModel",
           "TrafficModelError", "make_ood", "parse_shape", "request_name"]
