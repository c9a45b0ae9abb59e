"""Samplers rebuilt from the training reference statistics (``reference_stats.json``).

A numeric feature's stats hold its quantiles and a 20-bin histogram between the 0.5 % and
99.5 % quantiles (values outside counted in the end bins). The histogram's interior edges
give the exact training CDF at 19 points; the quantiles add the tails. Sampling inverts
that piecewise-linear CDF:

- continuous features: linear interpolation between the knots, rounded to the decimals
  the training data had (``amount`` has cents, ``popularity`` four decimals);
- integer-valued features (counts, hours, scores): each knot interval's probability is
  spread evenly over the integers inside it, so atoms (``num_devices == 1``) keep their
  mass instead of being smeared between integers.

Categorical features are drawn from their training frequencies. Nulls are not drawn here
(the traffic model decides where nulls go). Draws take a ``random.Random`` so that the
caller controls the seed; one draw is one ``rng.random()``.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NumericSampler", "CategoricalSampler", "sampler_for", "decimals_of"]

_EPS = 1e-9


def decimals_of(values: Sequence[float], limit: int = 6) -> int:
    """The fewest decimals that write every value exactly (up to ``limit``)."""
    for d in range(limit + 1):
        if all(abs(round(v, d) - v) <= _EPS * max(1.0, abs(v)) for v in values):
            return d
    return limit


@dataclass(frozen=True)
class NumericSampler:
    """Inverse-CDF sampler. ``cum``: cumulative probability at the end of each segment;
    ``segments``: (x0, x1) value range per segment (integer features: lowest and highest
    integer of the segment)."""

    name: str
    cum: tuple[float, ...]
    segments: tuple[tuple[float, float], ...]
    integer: bool
    decimals: int
    lo: float
    hi: float

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        j = min(bisect.bisect_right(self.cum, u), len(self.cum) - 1)
        start = self.cum[j - 1] if j else 0.0
        width = self.cum[j] - start
        v = (u - start) / width if width > 0 else 0.0
        x0, x1 = self.segments[j]
        x = x0 + v * (x1 - x0)
        if self.integer:  # undo the half-unit smear of _knots, inside the training range
            return float(min(self.hi, max(self.lo, math.floor(x + 0.5))))
        return round(x, self.decimals)

    def sample(self, n: int, rng: random.Random) -> list[float]:
        return [self.draw(rng) for _ in range(n)]


@dataclass(frozen=True)
class CategoricalSampler:
    name: str
    categories: tuple[str, ...]
    cum: tuple[float, ...]

    def draw(self, rng: random.Random) -> str:
        j = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.categories[min(j, len(self.categories) - 1)]

    def sample(self, n: int, rng: random.Random) -> list[str]:
        return [self.draw(rng) for _ in range(n)]


def _cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return tuple(x / acc for x in out) if acc > 0 else tuple(out)


def _knots(st: Mapping[str, Any], integer: bool) -> list[tuple[float, float]]:
    """(value, cumulative probability) points of the training CDF.

    Integer features work on X + U(-1/2, 1/2), whose CDF at k + 1/2 is exactly
    P(X <= k): a histogram edge e (bins are [e, e')) gives P(X < e) = P(X <= ceil(e) - 1),
    placed at ceil(e) - 1/2; an integral quantile v sits mid-atom at v, a fractional one
    (interpolated between two integers) at floor(v) + 1/2."""
    edges, counts = st["histogram"]["edges"], st["histogram"]["counts"]
    total = sum(counts)
    quantiles = [(float(v), float(q)) for q, v in st["quantiles"].items()]
    quantiles += [(float(edges[0]), 0.005), (float(edges[-1]), 0.995)]
    knots = []
    for v, p in quantiles:
        if integer and abs(v - round(v)) > _EPS:
            v = math.floor(v) + 0.5
        knots.append((v, p))
    if integer:
        knots += [(float(st["min"]) - 0.5, 0.0), (float(st["max"]) + 0.5, 1.0)]
    acc = 0
    for e, c in zip(edges[1:-1], counts[:-1], strict=True):
        acc += c
        knots.append((math.ceil(e - _EPS) - 0.5 if integer else float(e), acc / total))
    knots.sort()
    return knots


def _from_knots(name: str, st: Mapping[str, Any], integer: bool, decimals: int
                ) -> NumericSampler:
    knots = _knots(st, integer)
    cum, segments, best = [], [], 0.0
    for (x0, _), (x1, p1) in zip(knots, knots[1:], strict=False):
        if p1 > best:  # quantile and histogram knots may disagree by rounding: keep monotone
            segments.append((x0, x1))
            cum.append(p1)
            best = p1
    return NumericSampler(name, tuple(c / best for c in cum), tuple(segments), integer,
                          decimals, float(st["min"]), float(st["max"]))


def sampler_for(name: str, st: Mapping[str, Any], schema: Mapping[str, Any] | None = None
                ) -> NumericSampler | CategoricalSampler:
    """The sampler of one feature from its reference stats entry.

    Without stats (a service whose artifacts are not local: only the schema's ``min``,
    ``default`` (training median) and ``max`` are known) the CDF is the crude three-knot
    one through them; documented as approximate."""
    kind = st.get("kind") or (schema or {}).get("kind")
    if kind == "categorical":
        freqs = st.get("frequencies")
        if not freqs:
            cats = list((schema or {}).get("categories") or [])
            if not cats:
                raise ValueError(f"feature {name!r} has neither frequencies nor categories")
            freqs = {c: 1.0 for c in cats}
        cats = tuple(freqs)
        return CategoricalSampler(name, cats, _cumulative([freqs[c] for c in cats]))
    if kind != "numeric":
        raise ValueError(f"feature {name!r} kind must be numeric or categorical (got {kind!r})")
    if "histogram" not in st or "quantiles" not in st:
        sc = schema or {}
        if not all(k in sc for k in ("min", "max", "default")):
            raise ValueError(f"feature {name!r} has no reference distribution and no "
                             f"min/default/max in the schema")
        lo, mid, hi = float(sc["min"]), float(sc["default"]), float(sc["max"])
        d = decimals_of([lo, hi, mid])
        return NumericSampler(name, (0.5, 1.0), ((lo, mid), (mid, hi)), False, d, lo, hi)
    d = decimals_of([float(st["min"]), float(st["max"])])
    return _from_knots(name, st, d == 0, d)
