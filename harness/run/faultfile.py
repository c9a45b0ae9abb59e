"""The reference service's fault file as the harness reads it (``harness run --faults FILE``).

Checked against harness/run/schemas/faults.schema.json (every fault kind, setting, rule
and bound the service accepts, as JSON Schema), then by the service's own
``reference_service.faults.validate`` for what a schema cannot say (``ms_max >= ms`` for a
uniform distribution) and for its normalised form (numbers as floats). Errors name the
file, the field, the rule and the value:
``fault config faults.yaml: store_latency.ms must be a number of ms between 0 and 60000 (got -1)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.run.collectors.schema import first_problem

__all__ = ["MAX_BYTES", "FaultFileError", "load_fault_file"]

MAX_BYTES = 1_000_000  # a fault file is a few lines; anything this big is not one


class FaultFileError(ValueError):
    """The fault file cannot be used; the message names the field, the rule and the value."""


def load_fault_file(path: str | Path) -> dict[str, Any]:
    """The fault config in ``path`` (YAML or JSON), checked and normalised."""
    where = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_BYTES:
            raise FaultFileError(f"fault config {where!r} must be at most {MAX_BYTES} bytes "
                                 f"(got {size})")
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FaultFileError(f"fault config must be a readable file (got {where!r}: "
                             f"{exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FaultFileError(f"fault config {where!r} is not valid YAML: {exc}") from None
    problem = first_problem(raw, "faults")
    if problem is not None:
        field = f"{problem.where}.{problem.text}" if problem.where else problem.text
        raise FaultFileError(f"fault config {where}: {field}")
    from reference_service.faults import validate  # the service package is optional

    try:
        return validate(raw)
    except ValueError as exc:
        raise FaultFileError(f"fault config {where}: {exc}") from None
