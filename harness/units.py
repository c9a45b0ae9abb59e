"""Parsing of the small units users type on the command line (durations, tags).

One duration grammar for the whole harness: ``--duration``, ``--warmup``, ``--interval``,
``--request-timeout``, ``harness capacity --step`` and the durations inside a load shape
(``--rate-shape ramp:over=500ms``) all go through :func:`parse_duration`.
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_UNITS", "parse_duration", "parse_tags", "parse_versions"]

#: unit -> seconds; no unit means seconds
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str | float | int, *, what: str = "duration") -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"1.5m"``, ``"2h"``, ``"500ms"``, ``".5s"`` or a number.

    The grammar: a decimal number (no sign, no exponent), optional spaces, an optional
    unit ``ms``, ``s``, ``m`` or ``h`` (none: seconds). A number given as such must be
    finite and >= 0. ``what`` names the value in the error: ``"warmup must be ..."``.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what} must be a finite number of seconds >= 0 (got {text!r})")
        return value
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{what} must be a number with an optional unit ms, s, m or h; "
                         f"a duration must look like 500ms, 30s, 1.5m, 2h or 90 (got {text!r})")
    value = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if not math.isfinite(value):  # 400 nines are a valid number, and infinite as a float
        raise ValueError(f"{what} must be a finite number of seconds (got {text!r})")
    return value


_TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def parse_tags(items: list[str] | None) -> dict[str, str]:
    """``["team=ml", "release=1.4"]`` -> ``{"team": "ml", "release": "1.4"}``."""
    tags: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not _TAG_KEY.match(key):
            raise ValueError(
                f"tag must be key=value with a key of letters, digits, _ . - (got {item!r})"
            )
        if len(value) > 256:
            raise ValueError(f"tag value must be at most 256 characters (got {len(value)})")
        tags[key] = value
    return tags


def parse_versions(items: list[str] | None) -> dict[str, str]:
    """``["fraud=v2"]`` -> ``{"fraud": "v2"}`` (``--model-version``)."""
    versions: dict[str, str] = {}
    for item in items or []:
        name, sep, version = item.partition("=")
        if not sep or not name or not version:
            raise ValueError(f"--model-version must be MODEL=VERSION (got {item!r})")
        versions[name] = version
    return versions


def fmt_ms(us: float | None, digits: int = 3, *, unit: bool = False, signed: bool = False,
           missing: str = "-") -> str:
    """Microseconds as milliseconds for people: ``fmt_ms(1204) == "1.204"``.

    ``unit`` appends ``" ms"``, ``signed`` always shows the sign (``"+1.204"``), and a
    missing value (None) is ``missing`` (``"-"``), never ``"None"``. Every µs -> ms text
    of the analysis and the report goes through here, so a table and a finding agree.
    """
    if us is None:
        return missing
    text = f"{us / 1000.0:+.{digits}f}" if signed else f"{us / 1000.0:.{digits}f}"
    return text + " ms" if unit else text


def fmt_pct(share: float, digits: int = 1) -> str:
    """A share in 0..1 as a percentage for people: ``fmt_pct(0.259) == "25.9 %"``."""
    return f"{100.0 * share:.{digits}f} %"


def fmt_ms_unit(us: float | None, digits: int = 3) -> str:
    """``fmt_ms`` with its unit, for findings and evidence: ``fmt_ms_unit(1204) == "1.204 ms"``."""
    return fmt_ms(us, digits, unit=True)
