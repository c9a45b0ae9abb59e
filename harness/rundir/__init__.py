"""The run directory: the product's central artifact, and every file format in it.

Everything after a run (summary, diagnose, check, compare, report) reads only the run
directory. This package holds its layout and schemas (``directory``), the HdrHistogram
interval logs, reader and writer together (``hlog``), the other line formats
(``files``), collapsed stacks and speedscope (``stacks``), the replay format
(``replay``), the /metrics scrapes (``scrapes``) and atomic writes (``atomic``).
It imports only ``harness.stats`` and ``harness.units``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.rundir.directory import (
        SCHEMA_VERSION,
        IntervalPoint,
        ResourceSample,
        RunDir,
        RunDirError,
        create_run_dir,
        load_schema,
        schema_errors,
        write_json_atomic,
        write_run_json,
    )

__all__ = ["SCHEMA_VERSION", "IntervalPoint", "ResourceSample", "RunDir", "RunDirError",
           "create_run_dir", "load_schema", "schema_errors", "write_json_atomic",
           "write_run_json"]


def __getattr__(name: str) -> Any:
    """The directory's names, imported on first use: the load driver imports this package's
    small modules (clock, atomic, records) on every run and needs neither numpy nor
    jsonschema, which ``directory`` imports (~0.15 s of CPU per driver start, and a
    larger heap for the garbage collector to walk while it loads)."""
    if name in __all__:
        from harness.rundir import directory

        return getattr(directory, name)
    raise AttributeError(f"module 'harness.rundir' has no attribute {name!r}")
