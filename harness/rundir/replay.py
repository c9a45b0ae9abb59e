"""The replay file: recorded HTTP traffic as JSON lines, read, validated, merged, written;
and access logs converted to it. Pure library (the spec: docs/scenarios.md).

Format ``mlserve-replay`` version 1: a header line ``{"format": "mlserve-replay",
"version": 1, "base_time": <epoch s>, ...}``, then one request per line: ``t`` (seconds
since base_time), ``method``, ``path``, optional ``headers``, ``body`` (exact text) or
``body_b64`` or ``json``, ``body_omitted``/``body_bytes``, ``status``, ``name``,
``input_class``. Readers sort by ``t`` (a recorder writes a line when its response is
done, so out of order); a directory reads as the merge of its ``replay-*.jsonl`` files
(one per recording worker) on the absolute time axis.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any, TypeGuard

from harness.rundir.atomic import atomic_open

__all__ = ["FORMAT", "VERSION", "ReplayFormatError", "ReplayHeader", "ReplayRecord", "Replay",
           "read_replay", "write_replay", "record_to_json", "header_to_json", "merge_replays",
           "ConversionReport", "convert_access_log", "convert_access_log_file",
           "merge_directory"]

FORMAT = "mlserve-replay"
VERSION = 1
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
RECORD_KEYS = frozenset({"t", "method", "path", "headers", "body", "body_b64", "json",
                         "body_omitted", "body_bytes", "status", "name", "input_class"})
REDACTED = "[REDACTED]"


class ReplayFormatError(ValueError):
    """A replay file breaks the format; the message names the file, line and rule."""


@dataclass(frozen=True)
class ReplayHeader:
    """The first line: where the file came from and what instant ``t = 0`` is."""

    base_time: float
    source: str = ""
    sample: float = 1.0
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayRecord:
    """One request. ``body`` is the exact bytes to send (None: no body)."""

    t: float
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    status: int | None = None
    name: str | None = None
    input_class: str | None = None
    body_omitted: bool = False
    body_bytes: int | None = None

    def sendable_headers(self) -> dict[str, str]:
        """Headers to send again: redacted values are dropped (they would fail auth)."""
        return {k: v for k, v in self.headers if v != REDACTED}


@dataclass(frozen=True)
class Replay:
    """A whole file: its header and its records in arrival order."""

    header: ReplayHeader
    records: tuple[ReplayRecord, ...]

    @property
    def duration_s(self) -> float:
        return self.records[-1].t if self.records else 0.0


def _fail(where: str, rule: str) -> ReplayFormatError:
    return ReplayFormatError(f"{where}: {rule}")


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


_OPTIONAL_RULES: tuple[tuple[str, Any, str], ...] = (
    ("status", lambda v: type(v) is int and 100 <= v <= 599, "an HTTP status 100-599"),
    ("body_omitted", lambda v: isinstance(v, bool), "true or false"),
    ("body_bytes", lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    ("name", lambda v: isinstance(v, str), "a string"),
    ("input_class", lambda v: isinstance(v, str), "a string"),
)


def parse_header(obj: Any, where: str) -> ReplayHeader:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise _fail(where, f'the first line must be a header {{"format": "{FORMAT}", '
                           f'"version": {VERSION}, "base_time": …}} (got {str(obj)[:80]!r})')
    version = obj.get("version")
    if version != VERSION:
        raise _fail(where, f"version must be {VERSION} (got {version!r})")
    base = obj.get("base_time")
    if not _finite(base) or base < 0:
        raise _fail(where, f"base_time must be epoch seconds >= 0 (got {base!r})")
    sample = obj.get("sample", 1.0)
    if not _finite(sample) or not 0 < sample <= 1:
        raise _fail(where, f"sample must be in (0, 1] (got {sample!r})")
    source = obj.get("source", "")
    extra = {k: v for k, v in obj.items()
             if k not in ("format", "version", "base_time", "sample", "source")}
    return ReplayHeader(float(base), str(source), float(sample), VERSION, extra)


def parse_record(obj: Any, where: str) -> ReplayRecord:
    """One line's object -> ReplayRecord, or ReplayFormatError naming the field."""
    if not isinstance(obj, dict):
        raise _fail(where, f"a record must be a JSON object (got {type(obj).__name__})")
    unknown = set(obj) - RECORD_KEYS
    if unknown:
        raise _fail(where, f"unknown field {sorted(unknown)[0]!r}; allowed: "
                           f"{sorted(RECORD_KEYS)}")
    t = obj.get("t")
    if not _finite(t) or t < 0:
        raise _fail(where, f"t must be a number of seconds >= 0 (got {t!r})")
    method = obj.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _fail(where, f"method must be one of {sorted(METHODS)} (got {method!r})")
    path = obj.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _fail(where, f"path must be a string starting with '/' (got {path!r})")
    headers = obj.get("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise _fail(where, f"headers must map names to string values (got {headers!r})")
    bodies = [k for k in ("body", "body_b64", "json") if k in obj]
    if len(bodies) > 1:
        raise _fail(where, f"give at most one of body, body_b64, json (got {bodies})")
    body: bytes | None = None
    if "body" in obj and obj["body"] is not None:
        if not isinstance(obj["body"], str):
            raise _fail(where, f"body must be a string (got {type(obj['body']).__name__}); "
                               f"use 'json' for a JSON value")
        body = obj["body"].encode("utf-8")
    elif "body_b64" in obj:
        try:
            body = base64.b64decode(obj["body_b64"], validate=True)
        except (ValueError, TypeError) as exc:
            raise _fail(where, f"body_b64 must be base64 (got {str(obj['body_b64'])[:40]!r})") \
                from exc
    elif "json" in obj:
        body = json.dumps(obj["json"], separators=(",", ":")).encode()
    for key, ok, rule in _OPTIONAL_RULES:
        if obj.get(key) is not None and not ok(obj[key]):
            raise _fail(where, f"{key} must be {rule} (got {obj[key]!r})")
    return ReplayRecord(
        t=float(t), method=method.upper(), path=path, headers=tuple(headers.items()),
        body=body, status=obj.get("status"), name=obj.get("name"),
        input_class=obj.get("input_class"), body_omitted=bool(obj.get("body_omitted")),
        body_bytes=obj.get("body_bytes"))


def header_to_json(header: ReplayHeader) -> dict[str, Any]:
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                           "base_time": round(header.base_time, 6)}
    if header.source:
        out["source"] = header.source
    if header.sample != 1.0:
        out["sample"] = header.sample
    out.update(header.extra)
    return out


def record_to_json(rec: ReplayRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"t": round(rec.t, 6), "method": rec.method, "path": rec.path}
    if rec.headers:
        out["headers"] = dict(rec.headers)
    if rec.body is not None:
        try:
            out["body"] = rec.body.decode("utf-8")
        except UnicodeDecodeError:
            out["body_b64"] = base64.b64encode(rec.body).decode("ascii")
    if rec.body_omitted:
        out["body_omitted"] = True
    out.update((k, getattr(rec, k)) for k in ("body_bytes", "status", "name", "input_class")
               if getattr(rec, k) is not None)
    return out


def dumps_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


def _iter_file(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    if not line.endswith("\n"):
                        return  # a recorder killed mid-line: keep what was complete
                    raise ReplayFormatError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise ReplayFormatError(f"replay file {str(path)!r} is not UTF-8 text") from exc
    except OSError as exc:
        raise ReplayFormatError(f"replay file {str(path)!r} cannot be read: "
                                f"{exc.strerror or exc}") from exc


def _read_one(path: Path) -> Replay:
    lines = _iter_file(path)
    first = next(lines, None)
    if first is None:
        raise ReplayFormatError(f"replay file {str(path)!r} is empty (no header line)")
    header = parse_header(first[1], f"{path}:{first[0]}")
    records = sorted((parse_record(obj, f"{path}:{n}") for n, obj in lines), key=lambda r: r.t)
    return Replay(header, tuple(records))


def read_replay(path: str | Path) -> Replay:
    """Read and validate a replay file, or merge the ``replay-*.jsonl`` of a directory."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("replay-*.jsonl"))
        if not files:
            raise ReplayFormatError(f"replay directory {str(p)!r} holds no replay-*.jsonl files")
        return merge_replays([_read_one(f) for f in files], source=f"merged from {p}")
    return _read_one(p)


def merge_replays(replays: Iterable[Replay], source: str = "merged") -> Replay:
    """Several files on one time axis (absolute time), rebased to the earliest request."""
    parts = list(replays)
    if not parts:
        raise ValueError("merge_replays needs at least one replay (got none)")
    absolute = [(r.header.base_time + rec.t, i, rec)
                for i, r in enumerate(parts) for rec in r.records]
    absolute.sort(key=lambda x: (x[0], x[1]))
    base = absolute[0][0] if absolute else min(r.header.base_time for r in parts)
    records = tuple(replace(rec, t=max(0.0, t - base)) for t, _, rec in absolute)
    return Replay(ReplayHeader(base, source, min(r.header.sample for r in parts)), records)


def write_replay(path: str | Path, records: Iterable[ReplayRecord], *, base_time: float,
                 source: str = "", sample: float = 1.0,
                 extra: Mapping[str, Any] | None = None) -> int:
    """Write a replay file (records sorted by ``t``); returns the number of records."""
    header = ReplayHeader(base_time, source, sample, VERSION, dict(extra or {}))
    parse_header(header_to_json(header), "header")  # the same rules as reading
    ordered = sorted(records, key=lambda r: r.t)
    with atomic_open(path) as fh:
        fh.write(dumps_line(header_to_json(header)))
        for rec in ordered:
            fh.write(dumps_line(record_to_json(rec)))
    return len(ordered)


# -- access logs ----------------------------------------------------------------------------
# nginx/Apache "combined"; without referer and agent it is the Common Log Format.
def _quoted(name: str) -> str:
    return rf'"(?P<{name}>(?:[^"\\]|\\.)*)"'


_ACCESS_LINE = re.compile(
    r"^(?P<addr>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] " + _quoted("request")
    + r" (?P<status>\d{3}) (?P<bytes>\d+|-)"
    + rf"(?: {_quoted('referer')} {_quoted('agent')})?(?P<rest>.*)$")
SPREADS = ("even", "burst")


@dataclass
class ConversionReport:
    """What an access-log conversion kept and why it dropped the rest."""

    lines: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # first few skipped, "line N: reason"
    needs_body: int = 0  # POST/PUT/PATCH kept without a body (no --body for their path)

    def skip(self, lineno: int, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"line {lineno}: {reason}")

    def lines_out(self) -> list[str]:
        out = [f"{self.kept} of {self.lines} log lines kept"]
        out += [f"  skipped {n}: {reason}" for reason, n in sorted(self.skipped.items())]
        if self.needs_body:
            out.append(f"  {self.needs_body} POST/PUT/PATCH requests have no body: access logs "
                       f"do not carry bodies; give one per path (bodies=…) or expect 4xx")
        return out


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def convert_access_log(
    lines: Iterable[str], *, spread: str = "even", bodies: Mapping[str, bytes] | None = None,
    path_prefix: str | None = None,
) -> tuple[Replay, ConversionReport]:
    """Access-log lines (combined or common format) -> a Replay. Kept: arrival second,
    method, path with query, status, User-Agent. Lost: bodies (``bodies`` maps a path to
    the body to send), other headers, sub-second timing: ``spread="even"`` places the n
    requests of a second at (i + 0.5)/n into it, ``"burst"`` at its start."""
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {SPREADS} (got {spread!r})")
    bodies = dict(bodies or {})
    report = ConversionReport()
    parsed: list[tuple[float, ReplayRecord]] = []
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        report.lines += 1
        m = _ACCESS_LINE.match(line)
        if m is None:
            report.skip(lineno, "not a combined/common log line")
            continue
        try:
            when = datetime.strptime(m["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
        except ValueError:
            report.skip(lineno, "timestamp is not like 10/Oct/2000:13:55:36 -0700")
            continue
        parts = _unescape(m["request"]).split(" ")
        if len(parts) != 3 or parts[0] not in METHODS or not parts[1].startswith("/"):
            report.skip(lineno, "request line is not 'METHOD /path HTTP/x'")
            continue
        method, target, _ = parts
        if path_prefix is not None and not target.startswith(path_prefix):
            report.skip(lineno, f"path outside {path_prefix}")
            continue
        agent = m["agent"]
        headers = {"User-Agent": _unescape(agent)} if agent and agent != "-" else {}
        body = bodies.get(target.split("?", 1)[0])
        if body is not None:
            headers["Content-Type"] = "application/json" if _is_json(body) \
                else "application/octet-stream"
        elif method in ("POST", "PUT", "PATCH"):
            report.needs_body += 1
        parsed.append((when, ReplayRecord(0.0, method, target, tuple(headers.items()), body,
                                          int(m["status"]))))
        report.kept += 1
    parsed.sort(key=lambda x: x[0])  # stable: log order inside one second is kept
    base = parsed[0][0] if parsed else 0.0
    records = []
    for when, group in groupby(parsed, key=lambda x: x[0]):
        same = [rec for _, rec in group]
        records += [replace(rec, t=when - base + ((k + 0.5) / len(same) if spread == "even"
                                                  else 0.0)) for k, rec in enumerate(same)]
    return Replay(ReplayHeader(base, "access log", 1.0), tuple(records)), report


def _is_json(body: bytes) -> bool:
    try:
        return json.loads(body) is not None or True
    except (ValueError, UnicodeDecodeError):
        return False


def convert_access_log_file(
    src: str | Path, dst: str | Path, *, spread: str = "even",
    bodies: Mapping[str, bytes] | None = None, path_prefix: str | None = None,
) -> ConversionReport:
    """``harness record --from-access-log SRC -o DST``: convert and write; raises
    ReplayFormatError when nothing usable is in SRC."""
    try:
        with open(src, encoding="utf-8", errors="replace") as fh:
            replay, report = convert_access_log(fh, spread=spread, bodies=bodies,
                                                path_prefix=path_prefix)
    except OSError as exc:
        raise ReplayFormatError(f"access log {str(src)!r} cannot be read: {exc}") from exc
    if not replay.records:
        raise ReplayFormatError(f"access log {str(src)!r} has no usable request line "
                                f"({'; '.join(report.examples) or 'empty'})")
    write_replay(dst, replay.records, base_time=replay.header.base_time,
                 source=f"access log {Path(src).name} (spread={spread})")
    return report


def merge_directory(src: str | Path, dst: str | Path) -> int:
    """``harness record --merge DIR -o DST``: one file from a recording directory."""
    if not Path(src).is_dir():
        raise ReplayFormatError(f"merge needs a recording directory (got {str(src)!r})")
    replay = read_replay(src)
    return write_replay(dst, replay.records, base_time=replay.header.base_time,
                        source=replay.header.source, sample=replay.header.sample)
