"""The service's settings, read once per worker from environment variables.

``FASTSVC_ARTIFACTS``  artifacts directory (default ``<repo>/artifacts/fastapi_service``)
``FASTSVC_STORE``      ``redis`` (default) or ``sqlite``
``FASTSVC_REDIS_URL``  feature store URL (default ``redis://127.0.0.1:6379/0``)
``FASTSVC_SQLITE_PATH`` the SQLite feature store file (needed with ``sqlite``)
``FASTSVC_OTEL``       ``1`` turns on OpenTelemetry (see telemetry.py); off by default
``FASTSVC_MAX_INSTANCES`` largest batch accepted by POST /predict (default 256)
Faults have their own variables: faults.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "fastapi_service"
STORES = ("redis", "sqlite")


class SettingsError(ValueError):
    """A setting with a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    artifacts: Path
    store: str
    redis_url: str
    sqlite_path: Path | None
    otel: bool
    max_instances: int

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise SettingsError(f"FASTSVC_STORE must be one of {', '.join(STORES)} "
                                f"(got {self.store!r})")
        if self.store == "sqlite" and self.sqlite_path is None:
            raise SettingsError("FASTSVC_SQLITE_PATH must name the SQLite feature store "
                                "when FASTSVC_STORE=sqlite (got nothing)")
        if not 1 <= self.max_instances <= 10_000:
            raise SettingsError(f"FASTSVC_MAX_INSTANCES must be between 1 and 10000 "
                                f"(got {self.max_instances})")


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 0 or 1 (got {value!r})")


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    sqlite = env.get("FASTSVC_SQLITE_PATH")
    raw_max = env.get("FASTSVC_MAX_INSTANCES", "256")
    try:
        max_instances = int(raw_max)
    except ValueError:
        raise SettingsError(f"FASTSVC_MAX_INSTANCES must be an integer (got {raw_max!r})"
                            ) from None
    return Settings(
        artifacts=Path(env.get("FASTSVC_ARTIFACTS") or DEFAULT_ARTIFACTS),
        store=env.get("FASTSVC_STORE", "redis").strip().lower(),
        redis_url=env.get("FASTSVC_REDIS_URL", "redis://127.0.0.1:6379/0"),
        sqlite_path=Path(sqlite) if sqlite else None,
        otel=_flag(env, "FASTSVC_OTEL"),
        max_instances=max_instances,
    )
