"""Injected faults, switched at start: each one a cause that really happens in production.

Read from a JSON object in the file named by ``FASTSVC_FAULTS_FILE`` and then from
``FASTSVC_FAULT_<FIELD>`` variables (upper-case field name), which override the file:

- ``store_delay_ms``: every feature-store fetch waits this long first (a slow or far
  replica); awaited, so other requests proceed meanwhile.
- ``default_version``: requests that name no version get this one ("v2", the heavier model,
  rolled out as the default).
- ``response_pad_floats``: each response carries this many extra floats (debug
  explanations left on), and ``python_encoder``: the response goes through FastAPI's
  pure-python ``jsonable_encoder`` + ``json.dumps`` instead of pydantic's compiled encoder.
- ``blocking_ms``: a synchronous ``time.sleep`` in the async handler (a sync SDK call, e.g.
  a ``requests`` call to an upstream): the worker's event loop stops for that long.
- ``blocking_store``: features fetched with the *sync* client (redis-py / sqlite3) directly
  on the event loop; with ``store_delay_ms`` the delay then blocks the loop too.
- ``null_feature`` (+ ``null_fraction``, default 1.0): the loader writes that store column
  as null for that fraction of restaurants (an upstream job broke the column).

Too few workers is not a switch: start with ``--workers 1`` under load (README).
Errors name the field and the value in one line: ``FaultConfigError``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from examples.fastapi_service.features import STORE_FEATURES

FILE_ENV = "FASTSVC_FAULTS_FILE"
ENV_PREFIX = "FASTSVC_FAULT_"
MAX_DELAY_MS = 10_000.0
MAX_PAD_FLOATS = 2_000_000
MAX_FILE_BYTES = 64 * 1024
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class FaultConfigError(ValueError):
    """A fault setting that is unknown, of the wrong type or out of range; ``field`` names
    it (None when the error is about the file itself)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FaultConfig:
    store_delay_ms: float = 0.0
    default_version: str | None = None
    response_pad_floats: int = 0
    python_encoder: bool = False
    blocking_ms: float = 0.0
    blocking_store: bool = False
    null_feature: str | None = None
    null_fraction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("store_delay_ms", "blocking_ms"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_DELAY_MS:
                raise FaultConfigError(
                    f"{name} must be between 0 and {MAX_DELAY_MS:g} ms (got {value!r})", name)
        if not 0 <= self.response_pad_floats <= MAX_PAD_FLOATS:
            raise FaultConfigError(f"response_pad_floats must be between 0 and "
                                   f"{MAX_PAD_FLOATS} (got {self.response_pad_floats!r})",
                                   "response_pad_floats")
        if self.null_feature is not None and self.null_feature not in STORE_FEATURES:
            raise FaultConfigError(f"null_feature must be one of {', '.join(STORE_FEATURES)} "
                                   f"(got {self.null_feature!r})", "null_feature")
        if not 0.0 < self.null_fraction <= 1.0:
            raise FaultConfigError(
                f"null_fraction must be > 0 and <= 1 (got {self.null_fraction!r})",
                "null_fraction")

    def active(self) -> list[str]:
        """The fields that differ from the healthy default, as ``name=value``."""
        healthy = FaultConfig()
        return [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                if getattr(self, f.name) != getattr(healthy, f.name)
                and not (f.name == "null_fraction" and self.null_feature is None)]

    def check_versions(self, versions: list[str]) -> None:
        """``default_version`` must be one the artifacts have (known only once loaded)."""
        if self.default_version is not None and self.default_version not in versions:
            raise FaultConfigError(f"default_version must be one of {', '.join(versions)} "
                                   f"(got {self.default_version!r})", "default_version")


def _number(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise FaultConfigError(f"{name} must be a number (got {value!r})") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(f"{name} must be a finite number (got {value!r})")
    return float(value)


def _integer(name: str, value: Any) -> int:
    number = _number(name, value)
    if number != int(number):
        raise FaultConfigError(f"{name} must be an integer (got {value!r})")
    return int(number)


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FaultConfigError(f"{name} must be true or false (got {value!r})")


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FaultConfigError(f"{name} must be a string (got {value!r})")
    return value.strip() or None


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "store_delay_ms": _number, "default_version": _text, "response_pad_floats": _integer,
    "python_encoder": _boolean, "blocking_ms": _number, "blocking_store": _boolean,
    "null_feature": _text, "null_fraction": _number,
}


def from_mapping(raw: Mapping[str, Any], source: str = "faults",
                 origins: Mapping[str, str] | None = None) -> FaultConfig:
    """A checked FaultConfig from field -> value (strings are parsed). Every error starts
    with where the offending value came from: ``origins[field]`` or else ``source``."""
    origins = origins or {}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = origins.get(key, source)
        if key not in _PARSERS:
            raise FaultConfigError(f"{where}: unknown fault field {key!r} "
                                   f"(known: {', '.join(_PARSERS)})", key)
        try:
            values[key] = _PARSERS[key](key, value)
        except FaultConfigError as exc:
            raise FaultConfigError(f"{where}: {exc}", key) from None
    try:
        return FaultConfig(**values)
    except FaultConfigError as exc:
        raise FaultConfigError(f"{origins.get(exc.field or '', source)}: {exc}",
                               exc.field) from None


def read_file(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FaultConfigError(f"{path}: fault file must be <= {MAX_FILE_BYTES} bytes "
                                   f"(got {size})")
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise FaultConfigError(f"{FILE_ENV}: cannot read {str(path)!r} ({exc.strerror})"
                               ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FaultConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise FaultConfigError(f"{path}: must hold a JSON object (got {type(raw).__name__})")
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> FaultConfig:
    """The file named by FASTSVC_FAULTS_FILE, then FASTSVC_FAULT_* variables over it."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if env.get(FILE_ENV):
        path = Path(env[FILE_ENV])
        raw = read_file(path)
        merged.update(raw)
        origins.update(dict.fromkeys(raw, str(path)))
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        key = var[len(ENV_PREFIX):].lower()
        if key not in _PARSERS:
            raise FaultConfigError(f"{var}: unknown fault (known: "
                                   f"{', '.join(ENV_PREFIX + k.upper() for k in _PARSERS)})")
        merged[key] = value
        origins[key] = var
    return from_mapping(merged, "faults", origins)
