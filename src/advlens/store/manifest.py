"""The store's JSON manifest: schema version, configuration and finished stages."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from advlens.errors import StoreError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMAT = "advlens-analysis-store"
STAGES = ("predict", "attack", "activations", "statistics", "projections")


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the store at ``root``, or None when there is none."""
    file = root / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{file} is unreadable ({exc}); re-run `advlens prepare ... --overwrite`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{root} is not an advlens analysis store (its {MANIFEST} has no format {FORMAT!r})")
    return manifest


def check_schema(manifest: dict[str, Any], root: Path) -> None:
    """Refuse stores written with another schema version."""
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"the store at {root} has schema version {version}, this advlens reads version {SCHEMA_VERSION}; "
            f"re-create it with `advlens prepare ... --out {root} --overwrite` (or open it with the advlens "
            f"version that wrote it: {manifest.get('advlens_version', 'unknown')})"
        )


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file, then rename)."""
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, root / MANIFEST)
