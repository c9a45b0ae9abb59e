"""Stage maps: which pipeline stage a profiler sample belongs to.

A stage map is a JSON file (its schema: harness/run/schemas/stagemap.schema.json)::

    {"name": "reference_service",
     "rules": [{"stage": "fetch", "file": "*/reference_service/store/*"},
               {"stage": "infer", "file": "*/sklearn/*", "fallback": true}, ...],
     "wait":  [{"file": "*/threading.py", "function": "*.wait"}, ...]}

A rule matches a frame when every matcher it gives matches: ``file`` and
``function`` are globs (``fnmatch``, case-sensitive), ``file_regex`` and
``function_regex`` are regular expressions searched anywhere in the value.
Paths without a leading ``/`` (py-spy's short file names) are matched with one
prepended, so ``*/numpy/*`` matches both ``/venv/.../numpy/x.py`` and
``numpy/x.py``. A function glob is tried on the qualified name py-spy gives
(``SyncWorker.wait``) and on its last component (``wait``).

A sample's stage: walk its frames from the leaf upward; the first frame that a
service rule matches wins (within one frame, the first rule in file order).
Rules marked ``"fallback": true`` (libraries: sklearn, numpy, json, flask...)
are used, in the same leaf-upward way, only when no service rule matched any
frame: numpy called from the feature store is ``fetch``, numpy called from the
model is ``infer``, json called by Flask itself is ``serialize``. No match:
``other``.

``wait`` rules are tried on the leaf frame only: a sample whose leaf is a
blocking call (a lock, an event, a socket read, ``select``) is counted as
*waiting* within its stage. Only the wall view has such samples in quantity;
py-spy's on-CPU view drops idle threads.

``detect`` rules (optional, same matchers) name frames only the map's own service has
(``*/mlserver/*``): the automatic choice among the bundled maps (profilemap.py) considers a
map with detect rules only for a profile in which one of them matches a frame.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.run.collectors.schema import first_problem
from harness.rundir.stacks import Frame, Stack

__all__ = [
    "BUNDLED_DIR", "DEFAULT_MAP_PATH", "DEFAULT_WAIT_RULES", "OTHER", "Rule", "StageMap",
    "build_stages", "bundled_names", "load_stage_map", "summarize_view",
]

OTHER = "other"
BUNDLED_DIR = Path(__file__).resolve().parents[2] / "stagemaps"
DEFAULT_MAP_PATH = BUNDLED_DIR / "reference_service.json"
_BUNDLED_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_MAP_BYTES = 4_000_000  # the bundled map is 3 kB; a map this big is not one
_MATCHERS = ("file", "function", "file_regex", "function_regex")

# Blocking calls of the standard library and common servers, as the leaf Python frame.
DEFAULT_WAIT_RULES: tuple[dict[str, Any], ...] = (
    {"file": "*/threading.py", "function": "wait"},
    {"file": "*/threading.py", "function": "_wait_for_tstate_lock"},
    {"file": "*/threading.py", "function": "acquire"},
    {"file": "*/selectors.py", "function": "select"},
    {"file": "*/socket.py", "function_regex": r"(^|\.)(accept|readinto|recv\w*|send\w*)$"},
    {"file": "*/ssl.py", "function_regex": r"(^|\.)(read|recv\w*|write|send\w*|do_handshake)$"},
    {"file": "*/queue.py", "function": "get"},
    {"file": "*/subprocess.py", "function_regex": r"(^|\.)(wait|_wait|_try_wait|communicate)$"},
    {"file": "*/multiprocessing/*", "function_regex": r"(^|\.)(_recv\w*|wait|poll|_poll)$"},
    {"file": "*/gunicorn/workers/*", "function": "wait"},
    {"file": "*/gunicorn/arbiter.py", "function_regex": r"(^|\.)(sleep|wait_for_signals)$"},
    {"file": "*/redis/*", "function_regex": r"_read_from_socket|read_response|can_read"},
)


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"stage map {where}: {message}")


@dataclass(frozen=True)
class Rule:
    """One frame matcher; ``stage`` is empty for wait rules."""

    stage: str = ""
    file: str | None = None
    function: str | None = None
    file_regex: str | None = None
    function_regex: str | None = None
    fallback: bool = False
    _file_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _function_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_checked(cls, data: Mapping[str, Any], where: str) -> Rule:
        """A rule from a map that passed the schema (stagemap.schema.json); compiles its
        regular expressions (ValueError naming a bad one)."""
        compiled = {}
        for key in ("file_regex", "function_regex"):
            pattern = data.get(key)
            if pattern is not None:
                try:
                    compiled[key] = re.compile(pattern)
                except re.error as exc:
                    raise _fail(where, f"{key} is not a valid regex ({exc}) "
                                       f"(got {pattern!r})") from None
        stage = data.get("stage", "")
        return cls(stage=stage if isinstance(stage, str) else "", file=data.get("file"),
                   function=data.get("function"), file_regex=data.get("file_regex"),
                   function_regex=data.get("function_regex"),
                   fallback=bool(data.get("fallback", False)),
                   _file_re=compiled.get("file_regex"), _function_re=compiled.get("function_regex"))

    def matches(self, frame: Frame) -> bool:
        if frame.is_process:
            return False
        path = frame.file or ""
        if path and not path.startswith("/"):
            path = "/" + path
        if self.file is not None and not fnmatch.fnmatchcase(path, self.file):
            return False
        if self._file_re is not None and not self._file_re.search(path):
            return False
        name = frame.function
        short = name.rsplit(".", 1)[-1]
        if self.function is not None and not (fnmatch.fnmatchcase(name, self.function)
                                              or fnmatch.fnmatchcase(short, self.function)):
            return False
        return self._function_re is None or bool(self._function_re.search(name))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage} if self.stage else {}
        for key in _MATCHERS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.fallback:
            out["fallback"] = True
        return out


@dataclass(frozen=True)
class StageMap:
    """An ordered list of stage rules, the leaf rules that mean "waiting", and the frames
    that identify the service the map is for (``detect``; may be empty)."""

    name: str
    rules: tuple[Rule, ...]
    wait: tuple[Rule, ...]
    source: str | None = None
    detect: tuple[Rule, ...] = ()
    #: per frame (function, file, is a process frame): its first rule, first fallback rule,
    #: whether a wait rule and a detect rule match. A run's stacks repeat the same few
    #: thousand frames; matching every rule of every map against every frame of every
    #: stack cost the orchestrator ~0.25 s of CPU per run (5 bundled maps' coverage).
    _frames: dict[tuple[str, str | None, bool], tuple[Rule | None, Rule | None, bool, bool]] = \
        field(default_factory=dict, init=False, compare=False, hash=False, repr=False)

    @classmethod
    def from_dict(cls, data: object, source: str | None = None) -> StageMap:
        """A map from its JSON document, checked against harness/run/schemas/
        stagemap.schema.json; ValueError names the source, the field, the rule, the value."""
        where = source or "<dict>"
        problem = first_problem(data, "stagemap")
        if problem is not None:
            raise _fail(f"{where} {problem.where}" if problem.where else where, problem.text)
        assert isinstance(data, Mapping)
        wait = data.get("wait", list(DEFAULT_WAIT_RULES))
        name = data.get("name", Path(source).stem if source else "custom")
        return cls(
            name=str(name),
            rules=tuple(Rule.from_checked(r, f"{where} rules[{i}]")
                        for i, r in enumerate(data["rules"])),
            wait=tuple(Rule.from_checked(r, f"{where} wait[{i}]") for i, r in enumerate(wait)),
            source=source,
            detect=tuple(Rule.from_checked(r, f"{where} detect[{i}]")
                         for i, r in enumerate(data.get("detect", ()))),
        )

    @property
    def stages(self) -> list[str]:
        """Stage names in the order rules first mention them, then ``other``."""
        names = list(dict.fromkeys(rule.stage for rule in self.rules))
        return names + ([OTHER] if OTHER not in names else [])

    def classify(self, stack: Stack) -> tuple[str, bool]:
        """Return (stage, waiting) for one stack."""
        stage, waiting, _by_service = self.classify_rule(stack)
        return stage, waiting

    def _frame(self, frame: Frame) -> tuple[Rule | None, Rule | None, bool, bool]:
        """(first rule, first fallback rule, a wait rule matches, a detect rule matches)."""
        key = (frame.function, frame.file, frame.is_process)
        got = self._frames.get(key)
        if got is None:
            got = self._frames[key] = (
                next((r for r in self.rules if not r.fallback and r.matches(frame)), None),
                next((r for r in self.rules if r.fallback and r.matches(frame)), None),
                any(rule.matches(frame) for rule in self.wait),
                any(rule.matches(frame) for rule in self.detect))
        return got

    def classify_rule(self, stack: Stack) -> tuple[str, bool, bool]:
        """Return (stage, waiting, decided by a service rule) for one stack: the innermost
        frame a rule matches (rules in order), else the innermost a fallback rule does."""
        frames = [f for f in stack.frames if not f.is_process]
        if not frames:
            return OTHER, False, False
        waiting = self._frame(frames[-1])[2]
        for want_fallback in (False, True):
            for frame in reversed(frames):
                first, fallback, _, _ = self._frame(frame)
                rule = fallback if want_fallback else first
                if rule is not None:
                    return rule.stage, waiting, not want_fallback
        return OTHER, waiting, False

    def detects(self, stack: Stack) -> bool:
        """True when a frame of the stack is one of the map's service's own (``detect``)."""
        return bool(self.detect) and any(self._frame(f)[3] for f in stack.frames)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "source": self.source,
               "rules": [r.to_dict() for r in self.rules],
               "wait": [r.to_dict() for r in self.wait]}
        if self.detect:
            out["detect"] = [r.to_dict() for r in self.detect]
        return out


def bundled_names() -> list[str]:
    """Names of the bundled maps (harness/stagemaps/NAME.json), sorted."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))


def load_stage_map(path: Path | str | None = None) -> StageMap:
    """Load a stage map: a JSON file path, the name of a bundled map
    (``reference_service``: harness/stagemaps/NAME.json), or None for the default.

    Raises ValueError naming the file and the problem for a missing file, bad
    JSON or a bad rule.
    """
    if path is None:
        target = DEFAULT_MAP_PATH
    elif isinstance(path, str) and _BUNDLED_NAME.fullmatch(path):
        target = BUNDLED_DIR / f"{path}.json"
        if not target.exists():
            raise ValueError(f"stage map must be a JSON file or a bundled map name "
                             f"{bundled_names()} (got {path!r})")
    else:
        target = Path(path)
    try:
        if target.stat().st_size > MAX_MAP_BYTES:
            raise ValueError(f"stage map {str(target)!r} must be at most {MAX_MAP_BYTES} bytes "
                             f"(got {target.stat().st_size})")
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"stage map file must exist (got {str(target)!r})") from None
    except OSError as exc:
        raise ValueError(f"stage map file must be readable (got {str(target)!r}: "
                         f"{exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"stage map {str(target)!r} is not valid JSON: {exc}") from None
    return StageMap.from_dict(data, source=str(target))


def _top(counter: Mapping[str, int], n: int) -> list[dict[str, Any]]:
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"function": key, "samples": count} for key, count in ranked]


def summarize_view(stacks: Iterable[Stack], smap: StageMap, top: int = 10) -> dict[str, Any]:
    """Samples, share, waiting samples and top functions (self and total) per stage."""
    totals = {stage: 0 for stage in smap.stages}
    waiting = dict.fromkeys(totals, 0)
    self_counts: dict[str, dict[str, int]] = {stage: {} for stage in totals}
    total_counts: dict[str, dict[str, int]] = {stage: {} for stage in totals}
    for stack in stacks:
        stage, is_waiting = smap.classify(stack)
        totals[stage] += stack.count
        if is_waiting:
            waiting[stage] += stack.count
        frames = [f for f in stack.frames if not f.is_process]
        if not frames:
            continue
        leaf = frames[-1].key
        self_counts[stage][leaf] = self_counts[stage].get(leaf, 0) + stack.count
        # A recursive function is counted once per sample in its total.
        for key in dict.fromkeys(f.key for f in frames):
            total_counts[stage][key] = total_counts[stage].get(key, 0) + stack.count
    grand = sum(totals.values())
    return {
        "samples": grand,
        "stages": {
            stage: {
                "samples": count,
                "share": round(count / grand, 4) if grand else 0.0,
                "waiting": waiting[stage],
                "top_self": _top(self_counts[stage], top),
                "top_total": _top(total_counts[stage], top),
            }
            for stage, count in totals.items()
        },
    }


def build_stages(views: Mapping[str, Iterable[Stack]], smap: StageMap,
                 top: int = 10) -> dict[str, Any]:
    """The profile/stages.json document: per view, samples per stage, then the detail."""
    detail = {view: summarize_view(stacks, smap, top) for view, stacks in views.items()}
    out: dict[str, Any] = {"map": smap.to_dict()}
    for view, summary in detail.items():
        out[view] = {stage: s["samples"] for stage, s in summary["stages"].items()}
    out["detail"] = detail
    return out
