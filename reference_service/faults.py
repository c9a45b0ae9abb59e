"""Fault injection: the configuration, its validation, and its sharing across workers.

A fault config is a mapping of fault kind to settings; every kind takes an optional
``models`` list (default: all models) and most an optional ``probability`` (default 1)::

    store_latency:  {ms: 20, distribution: fixed|uniform|exponential|lognormal,
                     ms_max: 40 (uniform), sigma: 0.5 (lognormal)}
    store_errors:   {rate: 0.05}
    feature_null:   {features: [credit_score]}
    feature_rename: {renames: {credit_score: credit_score_v2}}
    inference_cpu:  {ms: 5}
    inference_scaling: {per_row_ms: 0.5, out_of_range_ms: 2.0}
    serialize_slow: {ms: 10}
    serialize_bloat: {kb: 256}

The faults act inside the stage modules they target (store/, features.py, inference.py,
serialize.py); this module only decides which apply. Gunicorn workers are separate
processes, so the live config is a JSON file (``REFSVC_FAULTS_STATE``) that each worker
re-reads when its stat signature changes; the admin endpoint replaces it atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("fixed", "uniform", "exponential", "lognormal")
_COMMON = {"models", "probability"}
FAULT_FIELDS: dict[str, dict[str, str]] = {
    # field -> rule: "ms" non-negative number, "p" probability, "rate" probability...
    "store_latency": {"ms": "nonneg", "distribution": "dist", "ms_max": "nonneg",
                      "sigma": "pos"},
    "store_errors": {"rate": "prob"},
    "feature_null": {"features": "names"},
    "feature_rename": {"renames": "renames"},
    "inference_cpu": {"ms": "nonneg"},
    "inference_scaling": {"per_row_ms": "nonneg", "out_of_range_ms": "nonneg"},
    "serialize_slow": {"ms": "nonneg"},
    "serialize_bloat": {"kb": "nonneg"},
}
REQUIRED = {
    "store_latency": ("ms",), "store_errors": ("rate",), "feature_null": ("features",),
    "feature_rename": ("renames",), "inference_cpu": ("ms",), "serialize_slow": ("ms",),
    "serialize_bloat": ("kb",), "inference_scaling": (),
}
MAX_MS = 60_000.0


class FaultConfigError(ValueError):
    """A fault config breaks a rule; the message names the field and the value."""


def _number(kind: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(f"{kind}.{key} must be a finite number (got {value!r})")
    return float(value)


def _check_field(kind: str, key: str, rule: str, value: Any) -> Any:
    if rule in ("nonneg", "pos", "prob"):
        v = _number(kind, key, value)
        if rule == "nonneg" and not 0 <= v <= MAX_MS * 1000:
            raise FaultConfigError(f"{kind}.{key} must be >= 0 (got {value!r})")
        if rule == "pos" and v <= 0:
            raise FaultConfigError(f"{kind}.{key} must be > 0 (got {value!r})")
        if rule == "prob" and not 0 <= v <= 1:
            raise FaultConfigError(f"{kind}.{key} must be between 0 and 1 (got {value!r})")
        if key in ("ms", "ms_max") and v > MAX_MS:
            raise FaultConfigError(f"{kind}.{key} must be <= {MAX_MS:g} ms (got {value!r})")
        return v
    if rule == "dist":
        if value not in DISTRIBUTIONS:
            raise FaultConfigError(f"{kind}.{key} must be one of {DISTRIBUTIONS} (got {value!r})")
        return value
    if rule == "names":
        if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
            raise FaultConfigError(
                f"{kind}.{key} must be a non-empty list of names (got {value!r})")
        return list(value)
    if rule == "renames":
        ok = isinstance(value, dict) and value and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        if not ok:
            raise FaultConfigError(f"{kind}.{key} must map old name to new name (got {value!r})")
        return dict(value)
    raise AssertionError(rule)


def validate(config: Any, known_features: set[str] | None = None,
             known_models: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """Check a fault config and return it normalised (numbers as floats)."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise FaultConfigError(f"fault config must be a mapping of fault kind to settings "
                               f"(got {type(config).__name__})")
    out: dict[str, dict[str, Any]] = {}
    for kind, settings in config.items():
        if kind not in FAULT_FIELDS:
            raise FaultConfigError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_FIELDS)}")
        if not isinstance(settings, dict):
            raise FaultConfigError(f"{kind} must be a mapping of settings (got {settings!r})")
        fields = FAULT_FIELDS[kind]
        norm: dict[str, Any] = {}
        for key, value in settings.items():
            if key == "models":
                if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                    raise FaultConfigError(f"{kind}.models must be a list of names (got {value!r})")
                if known_models is not None and set(value) - known_models:
                    raise FaultConfigError(f"{kind}.models names unknown models "
                                           f"{sorted(set(value) - known_models)}")
                norm[key] = list(value)
            elif key == "probability":
                norm[key] = _check_field(kind, key, "prob", value)
            elif key in fields:
                norm[key] = _check_field(kind, key, fields[key], value)
            else:
                raise FaultConfigError(f"{kind} has no setting {key!r}; "
                                       f"allowed: {sorted(set(fields) | _COMMON)}")
        for key in REQUIRED[kind]:
            if key not in norm:
                raise FaultConfigError(f"{kind}.{key} is required")
        if norm.get("distribution") == "uniform":
            if "ms_max" not in norm or norm["ms_max"] < norm["ms"]:
                raise FaultConfigError(f"{kind}.ms_max must be >= ms for a uniform distribution "
                                       f"(got {norm.get('ms_max')!r})")
        if known_features is not None:
            names = norm.get("features", []) + list(norm.get("renames", {}))
            unknown = [n for n in names if n not in known_features]
            if unknown:
                raise FaultConfigError(f"{kind} names unknown features {unknown}")
        out[kind] = norm
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a fault config from YAML or JSON (JSON is YAML) and validate its shape."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise FaultConfigError(f"cannot read fault config {str(path)!r}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise FaultConfigError(f"fault config {str(path)!r} is not valid YAML: {exc}") from exc
    return validate(raw)


def write_state(path: Path, config: dict[str, Any]) -> None:
    """Replace the shared state file atomically so a worker never reads half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".faults-")
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)
    os.replace(tmp, path)


def new_state_file(initial: dict[str, Any] | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix="refsvc-state-")) / "faults.json"
    write_state(path, initial or {})
    return path


@dataclass(frozen=True)
class ModelFaults:
    """The faults that apply to one model, each a settings dict or None."""

    store_latency: dict[str, Any] | None = None
    store_errors: dict[str, Any] | None = None
    feature_null: dict[str, Any] | None = None
    feature_rename: dict[str, Any] | None = None
    inference_cpu: dict[str, Any] | None = None
    inference_scaling: dict[str, Any] | None = None
    serialize_slow: dict[str, Any] | None = None
    serialize_bloat: dict[str, Any] | None = None


NO_FAULTS = ModelFaults()


class FaultState:
    """The live fault config of this worker, reloaded when the shared file changes."""

    def __init__(self, path: Path, known_features: set[str], known_models: set[str]):
        self.path = Path(path)
        self.known_features = known_features
        self.known_models = known_models
        self._sig: tuple[int, int, int] | None = None
        self._config: dict[str, dict[str, Any]] = {}
        self._per_model: dict[str, ModelFaults] = {}
        self.reload_errors = 0

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return  # keep the last good config; the state dir may be gone at shutdown
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig == self._sig:
            return
        try:
            config = validate(json.loads(self.path.read_text()), self.known_features,
                              self.known_models)
        except (OSError, ValueError) as exc:
            self.reload_errors += 1
            log.error("fault state %s not applied: %s", self.path, exc)
            self._sig = sig
            return
        self._sig = sig
        self._config = config
        self._per_model = {}

    def config(self) -> dict[str, dict[str, Any]]:
        self._refresh()
        return self._config

    def for_model(self, model: str) -> ModelFaults:
        self._refresh()
        cached = self._per_model.get(model)
        if cached is None:
            picked = {k: v for k, v in self._config.items()
                      if "models" not in v or model in v["models"]}
            cached = self._per_model[model] = ModelFaults(**picked) if picked else NO_FAULTS
        return cached

    def replace(self, config: Any) -> dict[str, dict[str, Any]]:
        norm = validate(config, self.known_features, self.known_models)
        write_state(self.path, norm)
        return norm
