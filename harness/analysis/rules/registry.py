"""One rule engine for the self-check and the diagnosis: rules registered in named books.

A rule is a small pure function of what its book runs on (the self-check's
``CheckContext``, a run's ``Facts``, a run against its baseline, a data.json
document) that returns its findings: a list, one finding, or None. It joins a book
with the ``rule`` decorator, under an id and the layer it is filed under::

    @rule("single", "slow_fetch", layer="upstream")
    def slow_fetch(f: Facts) -> Finding | None:
        ...

A book runs its rules in a fixed order: by the module order its runner declares
(``RuleBook.order_modules``), then by where each rule is defined in its module. That
order matters because ranking is stable: findings of equal severity and score keep it.
Books: ``self_check`` (harness/analysis/selfcheck.py; results are the summary's
``{check, ok, severity, detail}`` entries), ``single`` (harness/analysis/diagnosis/:
measurement, infrastructure, stages, inputs), ``change`` (diagnosis/change.py: a run
against its baseline) and ``data`` (harness/analysis/data/findings.py: data.json).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

__all__ = ["BOOKS", "LAYERS", "SEVERITIES", "Finding", "Rule", "RuleBook", "book", "rule"]

SEVERITIES = ("critical", "warning", "info")
LAYERS = ("measurement", "infrastructure", "upstream", "model", "serialization",
          "input data", "change")
BOOKS = ("self_check", "single", "change", "data")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Finding:
    """One ranked observation: what, where (layer), how sure, and what to look at next."""

    severity: str
    layer: str
    title: str
    evidence: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    #: share of the client latency (or of its growth) this finding explains, 0..1
    score: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES} (got {self.severity!r})")
        if self.layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS} (got {self.layer!r})")
        if not self.title:
            raise ValueError(f"title must be a non-empty string (got {self.title!r})")

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "layer": self.layer, "title": self.title,
                "evidence": list(self.evidence), "next_steps": list(self.next_steps),
                "score": round(float(self.score), 4), "data": dict(self.data)}


@dataclass(frozen=True)
class Rule:
    """A registered rule: its book, id, layer and function (``doc``: its first doc line)."""

    book: str
    id: str
    layer: str
    func: Callable[..., Any]
    #: the evidence kinds the rule reads (harness.analysis.diagnosis.evidence.KINDS, or
    #: ``stages``: Server-Timing or trace-derived), named in its findings
    uses: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return str(self.func.__module__)

    @property
    def line(self) -> int:
        code = getattr(self.func, "__code__", None)
        return int(code.co_firstlineno) if code is not None else 0

    @property
    def doc(self) -> str:
        return (self.func.__doc__ or "").strip().split("\n", 1)[0]

    def __call__(self, *args: Any) -> list[Any]:
        """The rule's results as a list (a rule may return a list, one result or None)."""
        out = self.func(*args)
        if out is None:
            return []
        if isinstance(out, (list, tuple)):
            return list(out)
        if isinstance(out, Iterable) and not isinstance(out, (str, bytes, dict)):
            return list(out)
        return [out]


class RuleBook:
    """The rules of one kind, in their run order."""

    def __init__(self, name: str) -> None:
        if not _ID.match(name):
            raise ValueError(f"book name must match {_ID.pattern} (got {name!r})")
        self.name = name
        self._rules: dict[str, Rule] = {}
        self._modules: tuple[str, ...] = ()

    def rule(self, id: str, layer: str, uses: tuple[str, ...] = ()) -> Callable[[F], F]:
        """Decorator: register the function under ``id``; returns it unchanged."""
        if not _ID.match(id):
            raise ValueError(f"rule id must match {_ID.pattern} (got {id!r})")
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS} (got {layer!r})")

        def register(func: F) -> F:
            new = Rule(self.name, id, layer, func, tuple(uses))
            old = self._rules.get(id)
            # re-importing a module (importlib.reload) registers the same rule again
            if old is not None and (old.module, old.func.__qualname__) != (
                    new.module, func.__qualname__):
                raise ValueError(f"rule id {id!r} is taken in book {self.name!r} "
                                 f"(by {old.module}.{old.func.__qualname__})")
            self._rules[id] = new
            return func

        return register

    def order_modules(self, *modules: ModuleType | str) -> None:
        """Run the rules of these modules in this order (others after them)."""
        self._modules = tuple(m if isinstance(m, str) else m.__name__ for m in modules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        rank = {m: i for i, m in enumerate(self._modules)}
        return tuple(sorted(self._rules.values(),
                            key=lambda r: (rank.get(r.module, len(rank)), r.module, r.line)))

    def get(self, id: str) -> Rule:
        try:
            return self._rules[id]
        except KeyError:
            raise KeyError(f"no rule {id!r} in book {self.name!r} "
                           f"(rules: {sorted(self._rules)})") from None

    def run(self, *args: Any) -> list[Any]:
        """Every rule's results, in the book's order."""
        out: list[Any] = []
        for r in self.rules:
            out += r(*args)
        return out


_BOOKS = {name: RuleBook(name) for name in BOOKS}


def book(name: str) -> RuleBook:
    """The named book (one of ``BOOKS``)."""
    try:
        return _BOOKS[name]
    except KeyError:
        raise ValueError(f"book must be one of {BOOKS} (got {name!r})") from None


def rule(book_name: str, id: str, layer: str, uses: tuple[str, ...] = ()
         ) -> Callable[[F], F]:
    """Register a rule in the named book: ``@rule("single", "slow_fetch", layer="upstream")``;
    ``uses`` names the evidence it reads (``("stages", "profile")``)."""
    return book(book_name).rule(id, layer, uses)
