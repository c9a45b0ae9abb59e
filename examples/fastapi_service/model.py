"""The trained models, loaded once per worker and checked against the manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from examples.fastapi_service.artifacts import ArtifactError, read_manifest, sha256


@dataclass(frozen=True)
class ModelSet:
    """Every version of the one model this service serves."""

    name: str
    models: dict[str, Any]
    default_version: str
    store_features: tuple[str, ...]
    request_features: tuple[str, ...]

    @property
    def versions(self) -> list[str]:
        return sorted(self.models)

    def predict(self, version: str, x: np.ndarray) -> np.ndarray:
        """Minutes to delivery, one per row of ``x`` (store features, then request ones).
        NaN inputs are fine: HistGradientBoosting routes missing values itself."""
        return np.asarray(self.models[version].predict(x), dtype=np.float64)


def load(directory: Path, default_version: str | None = None) -> ModelSet:
    """Load every version named in the manifest; a file whose sha256 differs is refused
    (a half-copied or stale artifact would otherwise serve wrong numbers quietly)."""
    manifest = read_manifest(directory)
    models = {}
    for version, entry in manifest["versions"].items():
        path = directory / entry["file"]
        if not path.is_file() or sha256(path) != entry["sha256"]:
            raise ArtifactError(f"{path} is missing or does not match the manifest's sha256")
        models[version] = joblib.load(path)
    default = default_version or manifest["default_version"]
    if default not in models:
        raise ArtifactError(f"default version must be one of {', '.join(sorted(models))} "
                            f"(got {default!r})")
    return ModelSet(manifest["model"], models, default, tuple(manifest["store_features"]),
                    tuple(manifest["request_features"]))
