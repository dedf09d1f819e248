"""The store's JSON manifest (schema version, configuration, finished stages) and the names advlens writes.

Schema 2 (this version) adds per-array digests to every stage entry, the model weights copied into
the store (``model.safetensors``, path relative to the store) and the ``prepare`` arguments that
rebuild a stage. Schema 1 stores are still *read* (without verification); they cannot be resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlens.errors import StoreError

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
MANIFEST = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
LOCK_FILE = ".advlens.lock"
DERIVED = "derived"
"""The folder of results computed on demand after ``prepare`` (:mod:`advlens.store.derived`)."""
FORMAT = "advlens-analysis-store"
CORE_STAGES = ("predict", "attack", "activations", "statistics", "projections")
"""Paper 001's stages: a store holding all of them is ``complete`` (what the /neurons page needs)."""
STAGES = (*CORE_STAGES, "features", "sweep", "profiles")
"""Every stage a store can hold, each after the stages it needs (``advlens.pipeline.stages`` checks that its
registry lists the same names in the same order). Stages beyond :data:`CORE_STAGES` are optional: a store
without them is complete, and ``prepare --stages NAME`` adds one without redoing the others."""


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def is_advlens_entry(name: str) -> bool:
    """Whether a file or folder name inside a store is one that advlens writes (and may remove)."""
    return (name in STAGES or name in (MANIFEST, WEIGHTS_FILE, LOCK_FILE, DERIVED)
            or name.startswith((f".{MANIFEST}.", f".{WEIGHTS_FILE}.", f"{LOCK_FILE}.", ".partial-", ".work-")))


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the store at ``root``, or None when there is none."""
    file = root / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{file} is unreadable ({exc}); re-create the store with the same "
                         "`advlens prepare ... --overwrite` (it removes only what advlens wrote)") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{root} is not an advlens analysis store (its {MANIFEST} has no format {FORMAT!r})")
    return manifest


@dataclass
class FolderState:
    """What an output folder holds, as far as ``prepare`` is concerned.

    ``kind``: ``missing``, ``empty`` (nothing but advlens leftovers), ``store`` (a readable manifest),
    ``corrupt`` (a ``manifest.json`` that does not parse: a damaged store) or ``foreign`` (anything else).
    """

    kind: str
    manifest: dict[str, Any] | None = None
    foreign: list[str] = field(default_factory=list)
    problem: str = ""


def inspect_folder(root: Path) -> FolderState:
    """Classify ``root`` without changing it."""
    if not root.exists():
        return FolderState("missing")
    if not root.is_dir():
        return FolderState("foreign", problem=f"{root} is a file, not a folder")
    foreign = sorted(p.name for p in root.iterdir() if not is_advlens_entry(p.name))
    file = root / MANIFEST
    if not file.exists():
        return FolderState("foreign" if foreign else "empty", foreign=foreign)
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return FolderState("corrupt", foreign=foreign, problem=f"{file} is unreadable ({exc})")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return FolderState("foreign", foreign=foreign,
                           problem=f"its {MANIFEST} is not an advlens manifest (no format {FORMAT!r})")
    return FolderState("store", manifest=manifest, foreign=foreign)


def check_schema(manifest: dict[str, Any], root: Path, *, writing: bool = False) -> None:
    """Refuse stores of a schema this version cannot read (or, when ``writing``, cannot resume)."""
    version = manifest.get("schema_version")
    if version == SCHEMA_VERSION or (not writing and version in READABLE_SCHEMAS):
        return
    raise StoreError(
        f"the store at {root} has schema version {version}, this advlens "
        f"{'writes' if writing else 'reads'} version {SCHEMA_VERSION}; "
        f"re-create it with `advlens prepare ... --out {root} --overwrite` (or open it with the advlens "
        f"version that wrote it: {manifest.get('advlens_version', 'unknown')})"
    )


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file, then rename); no temporary file is left on failure."""
    tmp = root / f".{MANIFEST}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, root / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def forget_stages(root: Path, manifest: dict[str, Any], stages: list[str]) -> list[str]:
    """Drop finished ``stages`` from ``manifest`` (in place) and write it; returns those that were recorded.

    Their folders stay until the stage is written again or the store is next opened for writing
    (an unrecorded stage folder is removed then), so a stage is never half-there.
    """
    dropped = [s for s in stages if manifest["stages"].pop(s, None) is not None]
    if dropped:
        write_manifest(root, manifest)
    return dropped


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
