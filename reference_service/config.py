"""Service configuration, read from ``REFSVC_*`` environment variables.

| variable | meaning | default |
|---|---|---|
| REFSVC_ARTIFACTS | artifacts directory | `<repo>/artifacts` |
| REFSVC_STORE | `sqlite` or `redis` | `sqlite` |
| REFSVC_REDIS_URL | Redis URL for the redis store | none |
| REFSVC_DEFAULT_VERSIONS | `model=version,...` overriding the manifest defaults | none |
| REFSVC_FAULTS | YAML/JSON fault config applied at start | none |
| REFSVC_FAULTS_STATE | shared live fault file (set by gunicorn_conf) | per-process temp file |
| REFSVC_ADMIN_TOKEN | enables `/admin/faults` with this bearer token | off |
| REFSVC_MAX_BODY_BYTES | request body limit (413 above) | 1048576 |
| REFSVC_MAX_BATCH | instances per request (422 above) | 256 |
| REFSVC_RECORD_TRAFFIC | directory to record requests into (JSON lines) | off |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from reference_service.artifacts import default_artifacts_dir
from reference_service.schema import MAX_RANKING_ITEMS


def parse_versions(text: str | None) -> dict[str, str]:
    """``"fraud=v2,churn=v1"`` -> ``{"fraud": "v2", "churn": "v1"}``."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, version = part.partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"default versions must look like model=version (got {part!r})")
        out[name.strip()] = version.strip()
    return out


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer (got {raw!r})") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value})")
    return value


@dataclass(frozen=True)
class ServiceConfig:
    artifacts_dir: Path = field(default_factory=default_artifacts_dir)
    store: str = "sqlite"
    redis_url: str | None = None
    default_versions: dict[str, str] = field(default_factory=dict)
    faults_file: Path | None = None
    faults_state: Path | None = None
    admin_token: str | None = None
    max_body_bytes: int = 1 << 20
    max_batch: int = 256
    max_items: int = MAX_RANKING_ITEMS
    record_traffic: Path | None = None

    def __post_init__(self) -> None:
        if self.store not in ("sqlite", "redis"):
            raise ValueError(f"store must be 'sqlite' or 'redis' (got {self.store!r})")
        if self.store == "redis" and not self.redis_url:
            raise ValueError("store 'redis' needs redis_url (REFSVC_REDIS_URL)")
        for name in ("max_body_bytes", "max_batch", "max_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")

    def __repr__(self) -> str:  # the admin token must never reach a log
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "admin_token"}
        return f"ServiceConfig({shown}, admin={'on' if self.admin_token else 'off'})"

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceConfig:
        """The environment's settings, with ``overrides`` (field name -> value) on top."""
        env = os.environ

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        values: dict[str, Any] = {
            "artifacts_dir": default_artifacts_dir(),
            "store": env.get("REFSVC_STORE", "sqlite"),
            "redis_url": env.get("REFSVC_REDIS_URL") or None,
            "default_versions": parse_versions(env.get("REFSVC_DEFAULT_VERSIONS")),
            "faults_file": path("REFSVC_FAULTS"),
            "faults_state": path("REFSVC_FAULTS_STATE"),
            "admin_token": env.get("REFSVC_ADMIN_TOKEN") or None,
            "max_body_bytes": _int_env("REFSVC_MAX_BODY_BYTES", 1 << 20, 1),
            "max_batch": _int_env("REFSVC_MAX_BATCH", 256, 1),
            "record_traffic": path("REFSVC_RECORD_TRAFFIC"),
        }
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown service config keys {sorted(unknown)}")
        values.update(overrides)
        for key in ("artifacts_dir", "faults_file", "faults_state", "record_traffic"):
            if values[key] is not None:
                values[key] = Path(values[key])
        return cls(**values)
