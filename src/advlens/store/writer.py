"""Writing an analysis store stage by stage, so an interrupted ``prepare`` resumes.

Each stage writes a Zarr group into ``STORE/.partial-<stage>`` and, once complete, renames it to
``STORE/<stage>`` and records it in the manifest. Leftovers of an interrupted stage are removed
when the store is opened for writing again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from advlens import __version__
from advlens.errors import StoreError
from advlens.store.manifest import (
    FORMAT, MANIFEST, SCHEMA_VERSION, STAGES, check_schema, config_hash, read_manifest, write_manifest,
)

logger = logging.getLogger(__name__)
_COMPRESSOR = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


class StageWriter:
    """Writes the arrays of one stage into its (temporary) Zarr group."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group

    def array(self, name: str, data: np.ndarray, chunks: tuple[int, ...] | None = None) -> None:
        """Store ``data`` in full; chunked along the first axis unless ``chunks`` is given."""
        data = np.ascontiguousarray(data)
        if chunks is None:
            chunks = (max(1, min(len(data), 4096)),) + data.shape[1:] if data.ndim else ()
        chunks = tuple(max(1, c) for c in chunks)
        self.group.create_array(name, data=data, chunks=chunks, compressors=_COMPRESSOR)

    def empty(self, name: str, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...]) -> zarr.Array:
        """Create an array to be filled batch by batch."""
        chunks = tuple(max(1, c) for c in chunks)
        return self.group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=_COMPRESSOR)

    def attrs(self, **values: Any) -> None:
        self.group.attrs.update(values)


class StoreWriter:
    """Opens (or creates) a store for ``prepare``, checking it belongs to the same configuration."""

    def __init__(self, root: str | Path, config: dict[str, Any], overwrite: bool = False) -> None:
        self.root = Path(root)
        self.config = config
        self.hash = config_hash(config)
        manifest = read_manifest(self.root) if self.root.exists() else None
        if self.root.exists() and manifest is None and any(self.root.iterdir()):
            if not overwrite:
                raise StoreError(f"{self.root} exists and is not an advlens store; choose another --out or pass --overwrite")
        if manifest is not None and not overwrite:
            check_schema(manifest, self.root)
            if manifest.get("config_hash") != self.hash:
                changed = sorted(k for k in set(config) | set(manifest.get("config", {}))
                                 if config.get(k) != manifest.get("config", {}).get(k))
                raise StoreError(
                    f"the store at {self.root} was prepared with another configuration (differs in: "
                    f"{', '.join(changed) or 'details'}); pass --overwrite to replace it or choose another --out"
                )
        if overwrite and self.root.exists():
            if manifest is None and any(self.root.iterdir()) and not (self.root / MANIFEST).exists():
                logger.warning("overwriting %s, which is not an advlens store", self.root)
            shutil.rmtree(self.root)
            manifest = None
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".partial-*"):
            logger.info("removing the unfinished stage %s of an interrupted run", leftover.name)
            shutil.rmtree(leftover)
        if manifest is None:
            manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "advlens_version": __version__,
                        "created": _now(), "config": config, "config_hash": self.hash, "stages": {}}
            write_manifest(self.root, manifest)
        self.manifest = manifest
        for stage in STAGES:  # a stage renamed into place but not recorded is redone
            if stage not in manifest["stages"] and (self.root / stage).exists():
                shutil.rmtree(self.root / stage)

    def finished(self, stage: str) -> bool:
        return stage in self.manifest["stages"]

    @contextmanager
    def stage(self, name: str) -> Iterator[StageWriter]:
        """Write stage ``name``; it becomes part of the store only if the block completes."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        partial = self.root / f".partial-{name}"
        if partial.exists():
            shutil.rmtree(partial)
        started = time.perf_counter()
        writer = StageWriter(zarr.open_group(str(partial), mode="w"))
        yield writer
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        self.manifest["stages"][name] = {"finished": _now(), "seconds": round(time.perf_counter() - started, 3),
                                         "attrs": dict(writer.group.attrs)}
        write_manifest(self.root, self.manifest)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
