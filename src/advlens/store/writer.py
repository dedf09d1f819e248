"""Writing an analysis store stage by stage, so an interrupted ``prepare`` resumes.

Each stage writes a Zarr group into ``STORE/.partial-<stage>`` and, once complete, renames it to
``STORE/<stage>`` and records it in the manifest with a digest per array. Leftovers of an
interrupted stage are removed when the store is opened for writing again. A lock file keeps a
second ``prepare`` out while one is writing, and only names advlens writes are ever removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zarr

from advlens import __version__
from advlens.errors import StoreError
from advlens.store.integrity import array_digest, missing_chunks
from advlens.store.lock import StoreLock
from advlens.store.manifest import (
    FORMAT, LOCK_FILE, MANIFEST, SCHEMA_VERSION, STAGES, WEIGHTS_FILE, FolderState, check_schema, config_hash, file_digest,
    inspect_folder, is_advlens_entry, write_manifest,
)

logger = logging.getLogger(__name__)
# every chunk carries a CRC32C checksum, so a damaged chunk fails to decode instead of reading as garbage
_COMPRESSORS = (zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), zarr.codecs.Crc32cCodec())
# every chunk is written, also one equal to the fill value, so a missing chunk file always means damage
_ARRAY_CONFIG = {"write_empty_chunks": True}


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
        self.group.create_array(name, data=data, chunks=chunks, compressors=_COMPRESSORS, config=_ARRAY_CONFIG)

    def empty(self, name: str, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...]) -> zarr.Array:
        """Create an array to be filled batch by batch (every chunk must be written before the stage ends)."""
        chunks = tuple(max(1, c) for c in chunks)
        return self.group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=_COMPRESSORS,
                                       config=_ARRAY_CONFIG)

    def attrs(self, **values: Any) -> None:
        self.group.attrs.update(values)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class StoreWriter:
    """Opens (or creates) a store for ``prepare`` under a lock; a context manager.

    Args:
        root: the store folder.
        config: the configuration recorded in (and identifying) the store.
        overwrite: replace a store of another configuration, or one whose manifest is unreadable.
            Only what advlens wrote is removed; a folder that is not an advlens store is refused.
        command: the ``prepare`` arguments (without ``--out``) that rebuild this store, for messages.
    """

    def __init__(self, root: str | Path, config: dict[str, Any], overwrite: bool = False,
                 command: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.config = config
        self.hash = config_hash(config)
        self.overwrite = overwrite
        self.command = list(command) if command is not None else None
        self.lock = StoreLock(self.root)
        self.manifest: dict[str, Any] = {}

    # ------------------------------------------------------------------ opening
    def __enter__(self) -> StoreWriter:
        self._refuse_foreign(inspect_folder(self.root))  # before anything is created or locked
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
            self._open(inspect_folder(self.root))  # again, now that no other prepare can change it
        except BaseException:
            self.lock.release()
            if created and not any(self.root.iterdir()):
                self.root.rmdir()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.lock.release()

    def _refuse_foreign(self, state: FolderState) -> None:
        if state.kind != "foreign":
            return
        listed = ", ".join(state.foreign[:5]) + (" …" if len(state.foreign) > 5 else "")
        why = state.problem or f"it holds {listed}"
        raise StoreError(
            f"{self.root} is not an advlens analysis store and is not empty ({why}); advlens never deletes "
            "what it did not write, also not with --overwrite: choose another --out (a new or empty folder)"
        )

    def _open(self, state: FolderState) -> None:
        self._refuse_foreign(state)
        manifest = state.manifest
        if state.kind == "corrupt" and not self.overwrite:
            raise StoreError(f"{state.problem}; re-create the store with the same `advlens prepare ... "
                             "--overwrite` (it removes only what advlens wrote)")
        if manifest is not None and not self.overwrite:
            check_schema(manifest, self.root, writing=True)
            if manifest.get("config_hash") != self.hash:
                if manifest.get("stages") or any(self.root.glob(".work-*")):
                    raise StoreError(self._other_configuration(manifest))
                logger.info("the store at %s holds no finished stage of its earlier configuration; starting anew",
                            self.root)
                manifest = None
        if self.overwrite and state.kind in ("store", "corrupt"):
            manifest = None
            if state.foreign:
                logger.warning("--overwrite keeps what advlens did not write in %s: %s", self.root,
                               ", ".join(state.foreign))
        if manifest is None:
            self._clear(keep_work=False)
            manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "advlens_version": __version__,
                        "created": _now(), "config": self.config, "config_hash": self.hash, "stages": {},
                        "command": self.command}
            write_manifest(self.root, manifest)
        else:
            self._clear(keep_work=True)
        self.manifest = manifest
        for stage in STAGES:  # a stage renamed into place but not recorded is redone
            if stage not in manifest["stages"] and (self.root / stage).exists():
                _remove(self.root / stage)

    def _other_configuration(self, manifest: dict[str, Any]) -> str:
        recorded = manifest.get("config", {})
        changed = sorted(k for k in set(self.config) | set(recorded) if self.config.get(k) != recorded.get(k))
        return (f"the store at {self.root} was prepared with another configuration (differs in: "
                f"{', '.join(changed) or 'details'}); pass --overwrite to replace it or choose another --out")

    def _clear(self, keep_work: bool) -> None:
        """Remove what advlens left in the folder: all its entries, or (``keep_work``) only unfinished ones."""
        for entry in sorted(self.root.iterdir()):
            name = entry.name
            if not is_advlens_entry(name) or name == LOCK_FILE:
                continue
            unfinished = name.startswith((".partial-", f".{WEIGHTS_FILE}.", f".{MANIFEST}.", f"{LOCK_FILE}."))
            if keep_work and not unfinished:
                continue
            if name.startswith(".partial-"):
                logger.info("removing the unfinished stage %s of an interrupted run", name)
            _remove(entry)

    # ------------------------------------------------------------------ writing
    def finished(self, stage: str) -> bool:
        return stage in self.manifest["stages"]

    def write_weights(self, state: Mapping[str, Any], source: str) -> Path:
        """Copy a model's state dict into the store as safetensors (kept when already there and intact).

        ``state`` maps names to tensors; ``source`` says where the weights came from (a path or a
        built-in model), for the record.
        """
        target = self.root / WEIGHTS_FILE
        recorded = self.manifest.get("weights")
        if recorded and target.is_file() and file_digest(target) == recorded.get("sha256"):
            return target
        from safetensors.torch import save

        tmp = self.root / f".{WEIGHTS_FILE}.tmp"
        try:  # written by Python, so the file gets the umask's permissions like the rest of the store
            tmp.write_bytes(save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.manifest["weights"] = {"file": WEIGHTS_FILE, "sha256": file_digest(target), "source": source,
                                    "tensors": len(state)}
        write_manifest(self.root, self.manifest)
        return target

    @contextmanager
    def stage(self, name: str) -> Iterator[StageWriter]:
        """Write stage ``name``; it becomes part of the store only if the block completes.

        A block that fails with an ``OSError`` (e.g. a full disk) leaves no partial stage behind.
        """
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        partial = self.root / f".partial-{name}"
        if partial.exists():
            shutil.rmtree(partial)
        started = time.perf_counter()
        try:
            writer = StageWriter(zarr.open_group(str(partial), mode="w"))
            yield writer
            arrays = _record_arrays(writer.group, name)
            final = self.root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self.manifest["stages"][name] = {"finished": _now(), "seconds": round(time.perf_counter() - started, 3),
                                         "attrs": dict(writer.group.attrs), "arrays": arrays}
        write_manifest(self.root, self.manifest)


def _record_arrays(group: zarr.Group, stage: str) -> dict[str, dict[str, Any]]:
    """Shape, dtype and digest of every array of a written stage; refuses arrays with unwritten chunks."""
    records = {}
    for name in sorted(group.array_keys()):
        array = group[name]
        missing = missing_chunks(array)
        if missing:
            raise StoreError(f"stage {stage} left {len(missing)} chunk(s) of {name} unwritten ({missing[0]}, …); "
                             "this is a bug in the stage")
        records[name] = {"sha256": array_digest(array), "shape": list(array.shape),
                         "dtype": np.dtype(array.dtype).str, "chunks": list(array.chunks)}
    return records


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
