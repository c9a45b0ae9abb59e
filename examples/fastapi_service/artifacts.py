"""The artifacts directory: its manifest and the files' checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class ArtifactError(RuntimeError):
    """The artifacts directory is missing, incomplete or does not match its manifest."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST} in {directory}; train first: "
                            f"python -m examples.fastapi_service.train --out {directory}")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is unreadable ({exc})") from None
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ArtifactError(f"{path}: manifest_version must be {MANIFEST_VERSION} "
                            f"(got {manifest.get('manifest_version')!r}); train again")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Written last, through a rename: a directory with a manifest is a complete one."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(directory / MANIFEST)
