"""The Locust load driver (runs as ``python -m harness.load.driver CONFIG.json``).

Only ``harness.load.config`` is safe to import from the rest of the harness: the other
modules import Locust, which monkey-patches the standard library with gevent, and belong
in the driver subprocess.
"""

from __future__ import annotations
