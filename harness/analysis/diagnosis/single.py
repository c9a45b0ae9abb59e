"""The rules about one run (the ``single`` book), in the order an experienced engineer
checks them: 1. measurement validity, 2. infrastructure (the machine, workers, queueing,
memory), 3. the service's stages (upstream, model, serialization), 4. the input data.

Each rule is a pure function ``Facts -> findings`` registered with
``@rule("single", id, layer)`` in its layer's module (``measurement``,
``infrastructure``, ``stages``, ``inputs``); this module fixes their order and runs them.
The derived quantities they share are in ``measures`` (re-exported here).
"""

from __future__ import annotations

from harness.analysis.diagnosis import (
    cpu,
    infrastructure,
    inputs,
    measurement,
    processes,
    remotehost,
    stages,
    tail,
)
from harness.analysis.diagnosis.evidence import run_annotated
from harness.analysis.diagnosis.facts import Facts
from harness.analysis.diagnosis.measures import (
    busy_fraction,
    machine_contended,
    oncpu_ratio,
    service_share,
    slow_classes,
    tail_in_contention,
)
from harness.analysis.rules import Finding, Rule, book

__all__ = ["BOOK", "busy_fraction", "machine_contended", "oncpu_ratio", "rules",
           "service_share", "single_rules", "slow_classes", "tail_in_contention"]

BOOK = book("single")
BOOK.order_modules(measurement, infrastructure, remotehost, processes, stages, cpu, tail,
                   inputs)


def rules() -> tuple[Rule, ...]:
    """The single-run rules in their order."""
    return BOOK.rules


def single_rules(f: Facts) -> list[Finding]:
    """Every single-run finding of ``f``, unranked, in the book's order; each says its rule
    and the evidence it used (``evidence.annotate``)."""
    return run_annotated(BOOK.rules, f, f.evidence)
