"""Scenario options: one table, read from the command line or the environment.

Each option has a Locust command-line flag (plain ``locust -f scenarios/X.py --flag v``,
or after ``--`` on ``harness run``) and an environment variable (for the harness driver,
which builds Locust's Environment as a library). The flag wins over the variable; both
are checked before any traffic and a bad value raises :class:`ScenarioOptionError` naming
the flag, the variable and the value. Pure: no Locust import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.load.shapes import parse_shape
from harness.rundir.replay import ReplayFormatError, read_replay
from scenarios.ood_classes import CLASSES

__all__ = ["ScenarioOptionError", "Option", "COMMON", "OOD", "REPLAY", "VERSIONS", "resolve"]


class ScenarioOptionError(ValueError):
    """A scenario option is invalid; the message names it and the bad value."""


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: str | None
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("must be an integer") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value
    return parse


def _float(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
            raise ValueError(f"must be {bound}" + (f" and <= {hi:g}" if hi < math.inf else ""))
        return value
    return parse


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"must look like name=value,name=value ({part!r} does not)")
        out[key.strip()] = value.strip()
    return out


def _mix(text: str) -> dict[str, float]:
    return {k: _float(0.0)(v) for k, v in _pairs(text).items()}


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ValueError(f"must name at least one class of {sorted(CLASSES)}")
    unknown = [c for c in names if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown class {unknown[0]!r}; known: {sorted(CLASSES)}")
    return names


def _shares(text: str) -> dict[str, float]:
    raw = _pairs(text)
    _classes(",".join(raw))
    shares = {}
    for name, value in raw.items():
        try:
            shares[name] = _float(0.0, 1.0)(value)
        except ValueError:
            raise ValueError(f"share of {name} must be in [0, 1] (got {value!r})") from None
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"shares must sum to <= 1 (the rest is production traffic; "
                         f"sum is {sum(shares.values()):g})")
    return shares


def _replay(text: str) -> Any:
    try:
        return read_replay(text)
    except ReplayFormatError as exc:
        raise ValueError(str(exc)) from None


COMMON: tuple[Option, ...] = (
    Option("--traffic-seed", "SCENARIO_SEED", _int(0), "1",
           "seed of the request sequence (same seed and users: same requests)"),
    Option("--zipf", "SCENARIO_ZIPF", _float(0.0, lo_open=True), "1.1",
           "Zipf exponent of entity popularity (higher: hotter hot set)"),
    Option("--model-mix", "SCENARIO_MODEL_MIX", _mix, None,
           "model weights, e.g. fraud=0.5,ranking=0.3,churn=0.2"),
    Option("--model-versions", "SCENARIO_VERSIONS", _pairs, None,
           "pin versions in the request path, e.g. fraud=v2"),
    Option("--max-batch", "SCENARIO_MAX_BATCH", _int(1), "16",
           "largest production batch (instances per request)"),
    Option("--think-time", "SCENARIO_THINK_TIME", _float(0.0), "0.1",
           "closed model: mean pause between a user's requests, seconds"),
    Option("--artifacts", "SCENARIO_ARTIFACTS", str, None,
           "artifacts directory (manifest.json, reference_stats.json)"),
    Option("--shape", "SCENARIO_SHAPE", parse_shape, None,
           "load shape, e.g. ramp:from=1,to=20,over=30s (step, ramp, spike, soak, diurnal)"),
)
OOD: tuple[Option, ...] = (
    Option("--ood-classes", "SCENARIO_OOD_CLASSES", _classes, ",".join(CLASSES),
           "OOD classes to send, comma-separated, equal shares of --ood-share"),
    Option("--ood-share", "SCENARIO_OOD_SHARE", _float(0.0, 1.0), "1.0",
           "share of OOD requests in [0, 1] (the rest is production traffic)"),
    Option("--ood-shares", "SCENARIO_OOD_SHARES", _shares, None,
           "per-class shares, e.g. covariate_shift=0.3,null_features=0.2 (overrides the two "
           "above)"),
)
REPLAY: tuple[Option, ...] = (
    Option("--replay-file", "SCENARIO_REPLAY_FILE", _replay, None,
           "replay file (or recording directory) to send"),
    Option("--speed", "SCENARIO_SPEED", _float(0.0, lo_open=True), "1.0",
           "replay speed factor (2: twice as fast)"),
    Option("--replay-users", "SCENARIO_REPLAY_USERS", _int(1), "50",
           "concurrent users carrying the replay when -u is not given"),
)


def _versions(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError("must name at least two different versions, comma-separated")
    if not all(v.replace("-", "").replace("_", "").replace(".", "").isalnum() for v in names):
        raise ValueError("versions may hold letters, digits, '-', '_' and '.' only")
    return names


def _path_template(text: str) -> str:
    if not text.startswith("/") or "{version}" not in text:
        raise ValueError("must be a path starting with / that holds {version} (and may hold "
                         "{model})")
    try:
        text.format(model="m", version="v")
    except (KeyError, IndexError, ValueError):
        raise ValueError("may use only the fields {model} and {version}") from None
    return text


VERSIONS: tuple[Option, ...] = (
    Option("--compare-model", "SCENARIO_COMPARE_MODEL", str, None,
           "the model whose versions scenarios/versions.py compares, e.g. fraud"),
    Option("--compare-versions", "SCENARIO_COMPARE_VERSIONS", _versions, "v1,v2",
           "versions to send every input to, comma-separated; the first is the baseline"),
    Option("--compare-path", "SCENARIO_COMPARE_PATH", _path_template,
           "/v1/models/{model}/versions/{version}/predict",
           "path of one version's predictions ({model}, {version})"),
)


def resolve(options: Sequence[Option], parsed: Any = None,
            environ: Mapping[str, str] | None = None,
            required: Sequence[str] = ()) -> dict[str, Any]:
    """Values by ``dest``: the parsed flag, else the environment variable, else default."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for opt in options:
        raw = getattr(parsed, opt.dest, None) if parsed is not None else None
        origin = opt.flag
        if raw is None or raw == "":
            raw, origin = env.get(opt.env) or None, opt.env
        if raw is None:
            raw, origin = opt.default, f"{opt.flag} default"
        if raw is None:
            if opt.dest in required:
                raise ScenarioOptionError(f"{opt.flag} (or {opt.env}) is required")
            out[opt.dest] = None
            continue
        try:
            out[opt.dest] = opt.parse(str(raw))
        except ValueError as exc:
            got = "" if "(got" in str(exc) else f" (got {str(raw)[:200]!r})"
            raise ScenarioOptionError(f"{origin}: {exc}{got}") from None
    return out


def ood_shares(values: Mapping[str, Any]) -> list[tuple[str, float]]:
    """[(class, share)] from --ood-shares, else --ood-classes splitting --ood-share."""
    if values.get("ood_shares"):
        return list(values["ood_shares"].items())
    classes = values["ood_classes"]
    return [(c, values["ood_share"] / len(classes)) for c in classes]
