"""Parse the W3C ``Server-Timing`` response header into stage durations.

A service tells the harness where its time went with
``Server-Timing: fetch;dur=1.204, infer;dur=3.870, app;dur=5.402`` (milliseconds).
Stage names are whatever the service sends.

Grammar (https://www.w3.org/TR/server-timing/, RFC 9110 lists)::

    header = #metric                      (comma separated, empty elements allowed)
    metric = token *( OWS ";" OWS param )
    param  = token [ OWS "=" OWS ( token / quoted-string ) ]

Decisions, because the spec leaves them to the consumer:

- Entries without a ``dur`` param are skipped (``cache;desc="hit"`` is a label, not a stage).
- A repeated metric name is **summed**: a service that calls its store twice and reports
  ``db;dur=2, db;dur=3`` spent 5 ms in ``db``, which is what a stage breakdown needs.
- Within one metric only the first ``dur`` counts (the W3C processing model says so).
- ``dur`` must be a finite number >= 0; anything else makes the header malformed,
  because a stage time that cannot be read must be counted, not guessed.

The header comes from the target, which is not trusted: it is malformed (counted, never
recorded) beyond :data:`MAX_HEADER_CHARS` characters, :data:`MAX_ENTRIES` entries, a name
longer than :data:`MAX_NAME_CHARS` or a ``dur`` above :data:`MAX_DUR_MS`. One header with
5,000 entries took the driver to 2.8 GB (a histogram series per name), and
``x;dur=1e308`` overflowed the conversion to microseconds; the series a run may create
are capped too (harness/load/recorder.py), for names that change from request to request.

Import-safe: no Locust, no gevent.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_DUR_MS", "MAX_ENTRIES", "MAX_HEADER_CHARS", "MAX_NAME_CHARS",
           "ServerTimingError", "format_server_timing", "parse_server_timing"]

#: a service's breakdown is a few stages (the reference service sends 4): 32 is plenty
MAX_ENTRIES = 32
#: a stage name is a word or two; beyond this it is data, not a name
MAX_NAME_CHARS = 64
#: 32 entries with a description each fit with room to spare; parsing stays cheap
MAX_HEADER_CHARS = 8192
#: about 11.6 days: far above any request (the histograms stop at 1 h and count what is
#: above as out of range) and far below what overflows the conversion to microseconds
MAX_DUR_MS = 1e9

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_OWS = r"[ \t]*"
_PARAM = rf"{_OWS};{_OWS}({_TOKEN})(?:{_OWS}={_OWS}({_TOKEN}|{_QUOTED}))?"
# One list element: optional metric (empty elements are legal in HTTP lists), then a
# comma or the end. Params are captured as one span and split by _PARAM_RE below.
_ELEMENT_RE = re.compile(
    rf"{_OWS}(?:({_TOKEN})((?:{_PARAM})*))?{_OWS}(?:,|\Z)",
)
_PARAM_RE = re.compile(_PARAM)
# Fast path for the common shape ``name;dur=1.234`` with nothing else in the element.
_SIMPLE_RE = re.compile(rf"{_OWS}({_TOKEN});dur=([0-9]+(?:\.[0-9]*)?){_OWS}(?:,|\Z)")


class ServerTimingError(ValueError):
    """The header does not follow the Server-Timing syntax (the caller counts it)."""


def _duration(raw: str, name: str, header: str) -> float:
    text = raw[1:-1] if raw.startswith('"') else raw
    try:
        value = float(text)
    except ValueError:
        raise ServerTimingError(
            f"Server-Timing dur must be a number (got {raw[:40]!r} for {name[:40]!r} in "
            f"{_show(header)})"
        ) from None
    if not math.isfinite(value) or value < 0 or value > MAX_DUR_MS:
        raise ServerTimingError(
            f"Server-Timing dur must be finite, >= 0 and <= {MAX_DUR_MS:g} ms (got {raw[:40]!r} "
            f"for {name[:40]!r} in {_show(header)})"
        )
    return value


def _show(header: str) -> str:
    return repr(header) if len(header) <= 120 else f"{header[:120]!r}... ({len(header)} chars)"


def _check_entry(name: str, entries: int, header: str) -> None:
    if entries > MAX_ENTRIES:
        raise ServerTimingError(
            f"Server-Timing must have at most {MAX_ENTRIES} entries (got more in {_show(header)})")
    if len(name) > MAX_NAME_CHARS:
        raise ServerTimingError(f"Server-Timing names must be at most {MAX_NAME_CHARS} "
                                f"characters (got {len(name)} in {_show(header)})")


def parse_server_timing(header: str) -> dict[str, float]:
    """Stage name -> duration in milliseconds; raises ServerTimingError when malformed.

    ``"a;dur=1.5, b;desc=\\"x, y\\";dur=2, c"`` -> ``{"a": 1.5, "b": 2.0}``.
    An empty header gives ``{}``.
    """
    if not isinstance(header, str):
        raise ServerTimingError(f"Server-Timing header must be a str (got {type(header).__name__})")
    if len(header) > MAX_HEADER_CHARS:
        raise ServerTimingError(f"Server-Timing must be at most {MAX_HEADER_CHARS} characters "
                                f"(got {len(header)})")
    stages: dict[str, float] = {}
    pos = 0
    end = len(header)
    entries = 0
    simple = _SIMPLE_RE.match
    element = _ELEMENT_RE.match
    while pos < end:
        m = simple(header, pos)
        if m is not None:
            name, value = m.group(1), float(m.group(2))
            entries += 1
            if entries > MAX_ENTRIES or len(name) > MAX_NAME_CHARS or value > MAX_DUR_MS:
                _check_entry(name, entries, header)
                _duration(m.group(2), name, header)  # both raise: a bound was passed
            stages[name] = stages.get(name, 0.0) + value
            pos = m.end()
            continue
        m = element(header, pos)
        if m is None or m.end() == pos:
            raise ServerTimingError(
                f"Server-Timing is malformed at character {pos} (got {_show(header)})"
            )
        name, params = m.group(1), m.group(2)
        pos = m.end()
        if name is None:
            continue
        entries += 1
        _check_entry(name, entries, header)
        if not params:
            continue
        for pm in _PARAM_RE.finditer(params):
            if pm.group(1).lower() == "dur":
                raw = pm.group(2)
                if raw is None:
                    raise ServerTimingError(
                        f"Server-Timing dur needs a value (got {name[:40]!r} in {_show(header)})"
                    )
                stages[name] = stages.get(name, 0.0) + _duration(raw, name, header)
                break
    return stages


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_server_timing(stages: dict[str, float], desc: dict[str, str] | None = None) -> str:
    """The header a service would send for ``stages`` (ms, microsecond resolution)."""
    parts = []
    for name, ms in stages.items():
        if not re.fullmatch(_TOKEN, name):
            raise ValueError(f"Server-Timing metric name must be an HTTP token (got {name!r})")
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"Server-Timing dur must be finite and >= 0 (got {ms!r})")
        part = f"{name};dur={ms:.3f}"
        if desc and name in desc:
            part += f";desc={_quote(desc[name])}"
        parts.append(part)
    return ", ".join(parts)
