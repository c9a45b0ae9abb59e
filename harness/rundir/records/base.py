"""Helpers of the record readers: a malformed document raises ValueError naming the place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def as_map(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be an object (got {type(d).__name__})")
    return d


def need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where} has no {key!r}")
    return d[key]


def opt(d: Mapping[str, Any], key: str, where: str, read: Callable[[Any, str], T]) -> T | None:
    value = d.get(key)
    return None if value is None else read(value, f"{where}.{key}")


def items(d: Mapping[str, Any], key: str, where: str, read: Callable[[Any, str], T]
          ) -> tuple[T, ...]:
    found = d.get(key) or []
    if not isinstance(found, list | tuple):
        raise ValueError(f"{where}.{key} must be a list (got {type(found).__name__})")
    return tuple(read(x, f"{where}.{key}[{i}]") for i, x in enumerate(found))


def present(**kv: Any) -> dict[str, Any]:
    """The keys whose value is not None (keys a writer leaves out when they do not apply)."""
    return {k: v for k, v in kv.items() if v is not None}
