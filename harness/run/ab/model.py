"""Repeated, interleaved runs of two sides (``harness ab``): the options, one run's record,
and the session's index file (``ab.json``).

A session directory holds 2 K run directories, made in rounds of one A and one B (A B, B A,
A B, ...: ``AbOptions.order``), and ``ab.json``,
rewritten atomically after every run, so a session that stops (Ctrl-C, a run that could
not start, a machine that went down) can be resumed and its finished runs compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.run.options import RunOptions

__all__ = ["INDEX_FILE", "SCHEMA_VERSION", "SIDES", "AbError", "AbOptions", "AbRun",
           "AbSession", "read_session"]

INDEX_FILE = "ab.json"
SCHEMA_VERSION = 1
SIDES = ("A", "B")
MAX_RUNS_PER_SIDE = 50


class AbError(Exception):
    """The session cannot go on (a run could not start); ``session_dir`` keeps what ran."""

    def __init__(self, message: str, session_dir: Path | None = None) -> None:
        super().__init__(message)
        self.session_dir = session_dir


@dataclass(frozen=True)
class AbOptions:
    """Two runs (``a`` and ``b``: everything ``harness run`` takes) made ``runs`` times each,
    interleaved in rounds (A B, B A, ...); ``labels`` say what each side is (shown by
    compare). Checked when built: both sides must measure the same way (scenario, load
    model and timing), since only what is meant to differ (target, service options,
    versions) may differ."""

    a: RunOptions
    b: RunOptions
    runs: int = 3
    out: Path = Path("runs")
    labels: tuple[str, str] = ("A", "B")
    command_line: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.runs, int) and 1 <= self.runs <= MAX_RUNS_PER_SIDE):
            raise ValueError(f"runs per side must be between 1 and {MAX_RUNS_PER_SIDE} "
                             f"(got {self.runs!r})")
        if len(self.labels) != 2 or not all(isinstance(s, str) and s for s in self.labels):
            raise ValueError(f"labels must be two non-empty strings (got {self.labels!r})")
        la, lb = self.a.describe_load(), self.b.describe_load()
        for key in ("model", "rate", "rate_shape", "arrival", "users", "duration_s",
                    "warmup_s", "interval_s", "workers"):
            if la.get(key) != lb.get(key):
                raise ValueError(f"both sides must load alike: {key} differs (A {la[key]!r}, "
                                 f"B {lb[key]!r})")
        if self.a.scenario.resolve() != self.b.scenario.resolve():
            raise ValueError(f"both sides must run the same scenario (got {self.a.scenario}, "
                             f"{self.b.scenario})")

    def side(self, name: str) -> RunOptions:
        return self.a if name == "A" else self.b

    def order(self) -> list[tuple[int, str]]:
        """(round, side) in the order the runs are made (round 1-based): A B, B A, A B, ...
        Counterbalanced: with A always first, a machine that drifts or changes speed with
        the run's period (measured: a neighbour slow every other run) would be charged to
        one side; alternating which side opens a round spreads it over both."""
        return [(r, s) for r in range(1, self.runs + 1)
                for s in (SIDES if r % 2 else SIDES[::-1])]

    def estimated_s(self) -> float:
        """Load time of the whole session (start-up and summaries not included)."""
        each = self.a.duration_s + self.a.warmup_s
        return 2 * self.runs * each if math.isfinite(each) else math.inf


@dataclass(frozen=True)
class AbRun:
    """One run of the session; ``dir`` is relative to the session directory."""

    round: int
    side: str
    dir: str
    status: str
    exit_code: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AbRun:
        side = d.get("side")
        if side not in SIDES:
            raise ValueError(f"ab run side must be A or B (got {side!r})")
        rel = str(d.get("dir") or "")
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"ab run dir must be a path inside the session (got {rel!r})")
        return cls(round=int(d["round"]), side=side, dir=rel, status=str(d.get("status")),
                   exit_code=int(d.get("exit_code", 0)), elapsed_s=float(d.get("elapsed_s", 0)))


@dataclass
class AbSession:
    """A session directory and its index: what was asked and what ran so far."""

    path: Path
    runs_per_side: int
    labels: tuple[str, str]
    sides: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[AbRun] = field(default_factory=list)
    state: str = "running"  # running, done, stopped (a run was interrupted), failed
    reason: str | None = None
    command_line: tuple[str, ...] = ()
    created: float = 0.0
    elapsed_s: float = 0.0

    def run_dirs(self, side: str, usable_only: bool = True) -> list[Path]:
        """The side's run directories in the order they ran (complete and degraded runs;
        all that ran with ``usable_only=False``)."""
        return [self.path / r.dir for r in self.runs if r.side == side
                and (not usable_only or r.status in ("complete", "degraded"))]

    @property
    def done(self) -> bool:
        return self.state == "done"

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": "ab", "created": self.created,
                "runs_per_side": self.runs_per_side, "order": "ABAB",
                "labels": list(self.labels), "sides": self.sides,
                "runs": [r.to_dict() for r in self.runs], "state": self.state,
                "reason": self.reason, "elapsed_s": round(self.elapsed_s, 3),
                "command_line": list(self.command_line)}


def read_session(path: Path) -> AbSession:
    """The session in ``path`` (a directory holding ab.json); ValueError says what is wrong."""
    index = Path(path) / INDEX_FILE
    try:
        doc = json.loads(index.read_text()[:10_000_000])
    except FileNotFoundError:
        raise ValueError(f"not an ab session directory: no {INDEX_FILE} in {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable {index}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ab":
        raise ValueError(f"{index} is not an ab session index")
    if int(doc.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ValueError(f"{index} has schema version {doc.get('schema_version')}, newer than "
                         f"this harness reads ({SCHEMA_VERSION})")
    labels = doc.get("labels") or ["A", "B"]
    runs = [AbRun.from_dict(r) for r in (doc.get("runs") or [])[:2 * MAX_RUNS_PER_SIDE]]
    return AbSession(path=Path(path), runs_per_side=int(doc.get("runs_per_side") or 0),
                     labels=(str(labels[0]), str(labels[1])), sides=dict(doc.get("sides") or {}),
                     runs=runs, state=str(doc.get("state") or "running"),
                     reason=doc.get("reason"), command_line=tuple(doc.get("command_line") or ()),
                     created=float(doc.get("created") or 0.0),
                     elapsed_s=float(doc.get("elapsed_s") or 0.0))
