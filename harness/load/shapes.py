"""Load shapes: a level over time, for user counts (closed model) or arrival rates (open).

Pure functions, no Locust import, so the harness's open-model pacer can use them:

    shape = parse_shape("ramp:from=5,to=50,over=60s")
    shape.rate_at(12.5)      # requests/s at 12.5 s into the run (float, >= 0)
    shape.users_at(12.5)     # users at 12.5 s (int, >= 0)
    shape.duration_s         # where the shape ends (the run stops there)

Spec syntax: ``KIND`` or ``KIND:key=value,key=value``; durations are
``harness.units.parse_duration``'s (``500ms``, ``30s``, ``2m``, ``1h`` or plain seconds), the
grammar of ``--duration``. The kinds and their parameters (defaults in brackets):

- ``step``: ``start`` [1], ``step`` [= start], ``every`` [10s], ``steps`` [5]: the level
  goes up by ``step`` every ``every`` seconds, ``steps`` levels in all.
- ``ramp``: ``from`` [1], ``to`` [10], ``over`` [60s], ``hold`` [0s]: linear, then held.
- ``spike``: ``base`` [5], ``peak`` [50], ``at`` [10s], ``width`` [5s], ``duration`` [30s].
- ``soak``: ``level`` [10], ``duration`` [600s]: constant for a long time.
- ``diurnal``: ``low`` [1], ``high`` [10], ``period`` [60s], ``cycles`` [1]: a compressed
  day, ``low + (high - low) * (1 - cos(2 pi t / period)) / 2`` (night, noon peak, night).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from harness.units import parse_duration

__all__ = ["KINDS", "Shape", "parse_shape", "parse_duration", "step", "ramp", "spike",
           "soak", "diurnal"]


def step(t: float, *, start: float, step: float, every: float, steps: int) -> float:
    k = min(int(t // every), steps - 1) if t >= 0 else 0
    return start + step * k


def ramp(t: float, *, start: float, end: float, over: float) -> float:
    if t <= 0:
        return start
    if t >= over:
        return end
    return start + (end - start) * t / over


def spike(t: float, *, base: float, peak: float, at: float, width: float) -> float:
    return peak if at <= t < at + width else base


def soak(t: float, *, level: float) -> float:
    return level


def diurnal(t: float, *, low: float, high: float, period: float) -> float:
    return low + (high - low) * (1.0 - math.cos(2.0 * math.pi * t / period)) / 2.0


# kind -> (defaults, level function of (t, params), duration of params)
_Params = dict[str, float]
_KINDS: dict[str, tuple[_Params, Callable[[float, _Params], float], Callable[[_Params], float]]]
_KINDS = {
    "step": ({"start": 1, "step": math.nan, "every": 10, "steps": 5},
             lambda t, p: step(t, start=p["start"], step=p["step"], every=p["every"],
                               steps=int(p["steps"])),
             lambda p: p["every"] * p["steps"]),
    "ramp": ({"from": 1, "to": 10, "over": 60, "hold": 0},
             lambda t, p: ramp(t, start=p["from"], end=p["to"], over=p["over"]),
             lambda p: p["over"] + p["hold"]),
    "spike": ({"base": 5, "peak": 50, "at": 10, "width": 5, "duration": 30},
              lambda t, p: spike(t, base=p["base"], peak=p["peak"], at=p["at"],
                                 width=p["width"]),
              lambda p: p["duration"]),
    "soak": ({"level": 10, "duration": 600},
             lambda t, p: soak(t, level=p["level"]),
             lambda p: p["duration"]),
    "diurnal": ({"low": 1, "high": 10, "period": 60, "cycles": 1},
                lambda t, p: diurnal(t, low=p["low"], high=p["high"], period=p["period"]),
                lambda p: p["period"] * p["cycles"]),
}
KINDS = tuple(_KINDS)
_DURATION_KEYS = {"every", "over", "hold", "at", "width", "duration", "period"}
_POSITIVE_KEYS = {"every", "over", "width", "duration", "period", "steps", "cycles"}


@dataclass(frozen=True)
class Shape:
    """A parsed shape: ``kind`` and its full parameter set (defaults filled in)."""

    kind: str
    params: tuple[tuple[str, float], ...]

    @property
    def duration_s(self) -> float:
        return _KINDS[self.kind][2](dict(self.params))

    def rate_at(self, t: float) -> float:
        """Arrival rate (requests/s) at ``t`` seconds into the run; 0 after the end."""
        if t >= self.duration_s:
            return 0.0
        return max(0.0, _KINDS[self.kind][1](max(0.0, t), dict(self.params)))

    def users_at(self, t: float) -> int:
        """User count at ``t`` seconds into the run (rounded; 0 after the end)."""
        return int(round(self.rate_at(t)))

    @property
    def peak(self) -> float:
        p = dict(self.params)
        return {"step": lambda: max(p["start"], p["start"] + p["step"] * (p["steps"] - 1)),
                "ramp": lambda: max(p["from"], p["to"]),
                "spike": lambda: max(p["base"], p["peak"]),
                "soak": lambda: p["level"],
                "diurnal": lambda: max(p["low"], p["high"])}[self.kind]()

    def spec(self) -> str:
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.params)


def parse_shape(spec: str) -> Shape:
    """``"spike:base=5,peak=40,at=10s"`` -> Shape; ValueError naming the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"shape must be one of {KINDS}, optionally KIND:key=value,… "
                         f"(got {spec!r})")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in _KINDS:
        raise ValueError(f"shape kind must be one of {KINDS} (got {kind!r})")
    defaults = _KINDS[kind][0]
    params = dict(defaults)
    for part in filter(None, (x.strip() for x in rest.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise ValueError(f"shape {kind} takes {sorted(defaults)} as key=value "
                             f"(got {part!r})")
        if key in _DURATION_KEYS:
            value = parse_duration(raw.strip(), what=f"shape {kind}: {key}")
        else:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"shape {kind}: {key} must be a number "
                                 f"(got {raw.strip()!r})") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"shape {kind}: {key} must be >= 0 (got {raw.strip()!r})")
        params[key] = value
    if kind == "step" and math.isnan(params["step"]):
        params["step"] = params["start"]
    for key in _POSITIVE_KEYS & set(params):
        if params[key] <= 0:
            raise ValueError(f"shape {kind}: {key} must be > 0 (got {params[key]:g})")
    for key in ("steps", "cycles"):
        if key in params and not float(params[key]).is_integer():
            raise ValueError(f"shape {kind}: {key} must be a whole number "
                             f"(got {params[key]:g})")
    return Shape(kind, tuple(sorted(params.items())))
