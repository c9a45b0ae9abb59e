"""Which stage map a profile is read with: the one given, the served service's, or the
bundled map that explains the profile best.

- ``given``: ``--stage-map NAME|FILE`` (the collector's ``stage_map`` option).
- ``served``: the harness started the service itself (run.json ``target.service``) and a
  bundled map is made for it (``reference`` -> ``reference_service``).
- ``auto``: any other target. Every bundled map classifies the stacks collected; the one
  that leaves the least in ``other`` is chosen. Two maps within :data:`TIE_SHARE` of each
  other tie, and the tie goes to the more specific one: a map whose service was seen (its
  ``detect`` rules matched a frame), then the one whose service rules decided more
  samples. A map with ``detect`` rules whose service was not seen is not a candidate: the
  MLServer map's rules for FastAPI and Starlette explain any FastAPI service's stacks
  (0 % other on the example FastAPI service, 98 % of it "framework", inference
  included), which says nothing about that service.

The choice and every candidate's coverage go into profile/status.json and stages.json as
``stage_map``: ``{name, source, chosen, other_share, candidates: {name: {other_share,
service_share, detected_share, eligible}}}`` (shares of the samples of the view the
choice was made on: the first view, ``oncpu`` by default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run.collectors.stagemap import OTHER, StageMap, bundled_names, load_stage_map
from harness.rundir.stacks import Stack

__all__ = ["CHOSEN", "SERVED_MAPS", "TIE_SHARE", "Coverage", "MapChoice", "choose",
           "coverage", "pick", "resolve", "served_service", "unresolved"]

CHOSEN = ("given", "served", "auto")
#: other shares this close are a tie (2 points: the bundled maps' "other" on their own
#: services is 0.0-0.2 %, python_web's on them 0.0-0.2 %; see BENCHMARKS.md "Stage maps")
TIE_SHARE = 0.02
#: the bundled map of each service the harness can start (``harness run --serve NAME``)
SERVED_MAPS = {"reference": "reference_service"}
_MAX_RUN_JSON = 4_000_000


@dataclass(frozen=True)
class Coverage:
    """How one map reads a profile. Shares are of the samples classified."""

    name: str
    samples: int
    other_share: float
    #: samples whose stage a service (not fallback) rule decided
    service_share: float
    #: samples with a frame of the map's own service; None for a map without detect rules
    detected_share: float | None

    @property
    def eligible(self) -> bool:
        """A candidate of the automatic choice: generic, or its service was seen."""
        return self.detected_share is None or self.detected_share > 0

    def to_dict(self) -> dict[str, Any]:
        return {"other_share": self.other_share, "service_share": self.service_share,
                "detected_share": self.detected_share, "eligible": self.eligible}


def coverage(smap: StageMap, stacks: Sequence[Stack]) -> Coverage:
    total = other = by_service = detected = 0
    for stack in stacks:
        stage, _waiting, service = smap.classify_rule(stack)
        total += stack.count
        other += stack.count if stage == OTHER else 0
        by_service += stack.count if service else 0
        detected += stack.count if smap.detect and smap.detects(stack) else 0

    def share(n: int) -> float:
        return round(n / total, 4) if total else 0.0

    return Coverage(smap.name, total, share(other) if total else 1.0, share(by_service),
                    share(detected) if smap.detect else None)


def choose(stacks: Sequence[Stack], maps: Sequence[StageMap]) -> tuple[StageMap, dict[str,
                                                                                   Coverage]]:
    """The map that leaves the least in ``other`` among the eligible ones (ties: the most
    specific), and every map's coverage. ValueError for no maps."""
    covered = {m.name: coverage(m, stacks) for m in maps}
    return pick(maps, covered), covered


def pick(maps: Sequence[StageMap], covered: Mapping[str, Coverage]) -> StageMap:
    """The automatic choice among ``maps`` from their coverage (see the module doc)."""
    if not maps:
        raise ValueError("choosing a stage map needs at least one map (got none)")
    eligible = [m for m in maps if covered[m.name].eligible] or list(maps)
    best = min(covered[m.name].other_share for m in eligible)
    tied = [m for m in eligible if covered[m.name].other_share <= best + TIE_SHARE]

    def specific(m: StageMap) -> tuple[bool, float, float, str]:
        c = covered[m.name]
        return (bool(c.detected_share), c.service_share, -c.other_share, m.name)

    return max(tied, key=specific)


def served_service(run_dir: Path) -> str | None:
    """The service the harness started for this run (run.json ``target.service``), if any."""
    try:
        path = run_dir / "run.json"
        if path.stat().st_size > _MAX_RUN_JSON:
            return None
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    target = meta.get("target") if isinstance(meta, Mapping) else None
    if not isinstance(target, Mapping) or not target.get("served_by_harness"):
        return None
    service = target.get("service")
    return service if isinstance(service, str) else None


@dataclass(frozen=True)
class MapChoice:
    """The map a profile is read with, how it was chosen, and every bundled map's coverage."""

    smap: StageMap
    chosen: str
    candidates: Mapping[str, Coverage]

    def to_dict(self) -> dict[str, Any]:
        own = self.candidates.get(self.smap.name)
        return {"name": self.smap.name, "source": self.smap.source, "chosen": self.chosen,
                "other_share": own.other_share if own is not None else None,
                "candidates": {n: c.to_dict() for n, c in self.candidates.items()}}


def unresolved(given: StageMap | None) -> dict[str, Any]:
    """The ``stage_map`` block of a profile without stacks (nothing to choose on)."""
    return {"name": None if given is None else given.name,
            "source": None if given is None else given.source,
            "chosen": None if given is None else "given", "other_share": None,
            "candidates": {}}


def resolve(given: StageMap | None, run_dir: Path | None,
            stacks: Sequence[Stack]) -> MapChoice:
    """The map for these stacks: ``given`` when not None, else the served service's bundled
    map, else the automatic choice among the bundled maps. Every bundled map's coverage
    (and the given map's) is reported either way."""
    bundled = [load_stage_map(name) for name in bundled_names()]
    maps = {m.name: m for m in bundled}
    if given is not None:
        maps[given.name] = given  # a given map may share a bundled map's name
    covered = {name: coverage(m, stacks) for name, m in maps.items()}
    served = served_service(run_dir) if run_dir is not None and given is None else None
    if given is not None:
        return MapChoice(given, "given", covered)
    if served in SERVED_MAPS:
        return MapChoice(maps[SERVED_MAPS[served]], "served", covered)
    return MapChoice(pick(bundled, covered), "auto", covered)
