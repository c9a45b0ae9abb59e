"""The artifacts directory: manifest, sha256 checks, and loading models safely.

Unpickling runs code, so a pickle is only loaded after its sha256 matches the manifest
written by the training step; a mismatch is refused with a message naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent


class ArtifactError(Exception):
    """Artifacts are missing, incomplete or do not match their manifest."""


def default_artifacts_dir() -> Path:
    """``$REFSVC_ARTIFACTS`` if set, else ``<repo>/artifacts``."""
    env = os.environ.get("REFSVC_ARTIFACTS")
    return Path(env) if env else REPO_ROOT / "artifacts"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"no {MANIFEST} in artifacts directory {str(directory)!r}; build it with "
            "`python -m reference_service.train` (or set REFSVC_ARTIFACTS)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not readable JSON ({exc})") from exc
    version = manifest.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise ArtifactError(
            f"manifest schema_version must be {MANIFEST_SCHEMA_VERSION} (got {version!r}) in "
            f"{path}; retrain with `python -m reference_service.train`"
        )
    return manifest


def verified_path(directory: Path, manifest: dict[str, Any], name: str) -> Path:
    """Path of artifact ``name`` after checking its sha256 against the manifest."""
    entry = manifest.get("artifacts", {}).get(name)
    if entry is None:
        raise ArtifactError(f"artifact {name!r} is not listed in the manifest of {directory}")
    path = Path(directory) / name
    if not path.is_file():
        raise ArtifactError(f"artifact {name!r} listed in the manifest is missing from {directory}")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"artifact {name!r} sha256 mismatch: manifest says {entry['sha256']}, file has "
            f"{actual}; refusing to load it (retrain or restore the file)"
        )
    return path


def load_pickle(directory: Path, manifest: dict[str, Any], name: str) -> Any:
    path = verified_path(directory, manifest, name)
    with open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - sha256 verified against the manifest above


def write_artifact_entry(directory: Path, name: str) -> dict[str, Any]:
    path = Path(directory) / name
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)
