"""A load and latency diagnostics harness for ML model-serving services.

Import-safe: nothing here imports Locust (whose import monkey-patches the standard
library with gevent); the load driver runs in its own subprocess.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
